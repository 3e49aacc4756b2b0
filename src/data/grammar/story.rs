//! The rules: title, opening, friend, object, middle sentences, ending.
//!
//! Each function writes its part of the story, asking the [`Writer`] for each decision
//! right before the text it decides (so a parser sees a wrong guess at once). Weights are
//! written next to their options; `w.pick(n)` is uniform over `n`.

use super::words::*;
use super::Writer;

/// Middle sentences: at least this many, then another with probability 2/3, up to the most.
const MIN_MIDDLE: usize = 2;
const MAX_MIDDLE: usize = 8;

/// Who and what a story is about, fixed by its first choices.
struct Cast {
    hero: usize,
    friend: usize,
    adj: &'static str,
    noun: &'static str,
}

impl Cast {
    fn name(&self, hero: bool) -> &'static str {
        PEOPLE[if hero { self.hero } else { self.friend }].0
    }
    /// The hero's pronoun. Only the hero has one, so "he" never hides who is meant.
    fn he(&self) -> &'static str {
        if PEOPLE[self.hero].1 {
            "she"
        } else {
            "he"
        }
    }
}

/// Writes one story: a title line, then one paragraph with no line break.
pub(crate) fn story(w: &mut Writer) {
    // Title: "Tom and the Red Kite" (2/3) or "The Red Kite" (1/3).
    let titled = w.weighted(&[2, 1]) == 0;
    let mut hero = 0;
    if titled {
        hero = w.pick(PEOPLE.len());
        w.put_all(&[PEOPLE[hero].0, " and the "]);
    } else {
        w.put("The ");
    }
    let adj = w.one(&OBJECT_ADJS);
    w.put_cap(adj, true);
    w.put(" ");
    let noun = w.one(&NOUNS);
    w.put_cap(noun, true);
    w.put("\n");
    if !titled {
        hero = w.pick(PEOPLE.len());
    }

    opening(w, hero);
    w.put(" ");
    let friend = friend_intro(w, hero);
    let cast = Cast {
        hero,
        friend,
        adj,
        noun,
    };
    w.put(" ");
    object_intro(w, &cast);
    let mut told = 0;
    while told < MAX_MIDDLE && (told < MIN_MIDDLE || w.weighted(&[2, 1]) == 0) {
        w.put(" ");
        middle(w, &cast);
        told += 1;
    }
    w.put(" ");
    ending(w, &cast);
}

fn opening(w: &mut Writer, hero: usize) {
    let (name, _, kind) = PEOPLE[hero];
    let trait_kind = |w: &mut Writer| {
        let t = w.one(&TRAITS);
        w.put_a(t, false);
        w.put_all(&[" ", kind]);
    };
    match w.weighted(&[3, 2, 2, 2]) {
        0 => {
            w.put("Once upon a time, there was ");
            trait_kind(w);
            w.put_all(&[" named ", name]);
        }
        1 => {
            w.put("Once upon a time, there lived ");
            trait_kind(w);
            w.put_all(&[" called ", name]);
        }
        2 => {
            w.put("One ");
            w.say(&MORNINGS);
            w.put_all(&[" morning, ", name, " woke up early"]);
        }
        _ => {
            w.put_all(&[name, " was "]);
            trait_kind(w);
            w.put(" who lived near ");
            w.say(&PLACES);
        }
    }
    w.put(".");
}

/// Introduces the friend (any other person, uniformly) and returns who it is.
fn friend_intro(w: &mut Writer, hero: usize) -> usize {
    let (name, she, _) = PEOPLE[hero];
    let other = |w: &mut Writer| {
        let f = w.pick(PEOPLE.len() - 1);
        if f >= hero {
            f + 1
        } else {
            f
        }
    };
    let name_or_pronoun = |w: &mut Writer, cap: bool| {
        if w.pick(2) == 0 {
            w.put(name);
        } else {
            w.put_cap(if she { "she" } else { "he" }, cap);
        }
    };
    let friend;
    match w.pick(3) {
        0 => {
            name_or_pronoun(w, true);
            w.put(" had a friend named ");
            friend = other(w);
            w.put(PEOPLE[friend].0);
        }
        1 => {
            w.put_all(&[name, "'s best friend was "]);
            friend = other(w);
            let t = w.one(&TRAITS);
            w.put_a(t, false);
            w.put_all(&[" ", PEOPLE[friend].2, " called ", PEOPLE[friend].0]);
        }
        _ => {
            w.put("Every day, ");
            name_or_pronoun(w, false);
            w.put(if she {
                " played with her friend "
            } else {
                " played with his friend "
            });
            friend = other(w);
            w.put(PEOPLE[friend].0);
        }
    }
    w.put(".");
    friend
}

/// Introduces the object of the title.
fn object_intro(w: &mut Writer, c: &Cast) {
    match w.pick(3) {
        0 => {
            w.put("One day, ");
            subject(w, c, false, false);
            w.put(" found ");
            w.put_a(c.adj, false);
            w.put_all(&[" ", c.noun, " "]);
            w.say(&WHERE);
        }
        1 => {
            w.put_all(&[c.name(true), " had "]);
            w.put_a(c.adj, false);
            w.put_all(&[" ", c.noun, " that ", c.he(), " loved very much"]);
        }
        _ => {
            w.put_all(&[c.name(false), " gave ", c.name(true), " "]);
            w.put_a(c.adj, false);
            w.put_all(&[" ", c.noun, " as a present"]);
        }
    }
    w.put(".");
}

/// Writes a singular subject and returns whether it is the hero: the hero's name (3) or
/// pronoun (3), or, with `with_friend`, the friend's name (2).
fn subject(w: &mut Writer, c: &Cast, cap: bool, with_friend: bool) -> bool {
    let who = if with_friend {
        w.weighted(&[3, 3, 2])
    } else {
        w.pick(2)
    };
    match who {
        0 => w.put(c.name(true)),
        1 => w.put_cap(c.he(), cap),
        _ => w.put(c.name(false)),
    }
    who < 2
}

/// The connective that opens a sentence; returns whether the next word is capitalised.
fn connective(w: &mut Writer) -> bool {
    let i = w.weighted(&CONNECTIVE_WEIGHTS);
    w.put(CONNECTIVES[i]);
    i == 0
}

fn middle(w: &mut Writer, c: &Cast) {
    match w.weighted(&[6, 2, 2, 2, 2, 1, 2]) {
        // Then, Tom went to the park.
        0 => {
            let cap = connective(w);
            let hero = subject(w, c, cap, true);
            action(w, c, c.name(!hero));
        }
        // They played with the kite all day.
        1 => {
            let cap = connective(w);
            together(w, c, cap);
        }
        // Tom said, "Wow!"
        2 => {
            subject(w, c, true, true);
            w.put(" said, \"");
            saying(w, c);
            w.put("\"");
        }
        // "Wow!" said Tom.  /  "I am hungry," Lily whispered.
        3 => {
            w.put("\"");
            saying(w, c);
            w.comma_for_full_stop();
            w.put("\"");
            let form = w.pick(4);
            let name = c.name(w.pick(2) == 0);
            match form {
                0 => w.put_all(&[" said ", name]),
                _ => w.put_all(&[" ", name, [" said", " shouted", " whispered"][form - 1]]),
            }
            w.put(".");
        }
        // He asked Lily, "Are you hungry?" "Of course!" said Lily.
        4 => {
            let hero = subject(w, c, true, true);
            let other = c.name(!hero);
            w.put_all(&[" asked ", other, ", \""]);
            match w.pick(QUESTIONS.len() + 2) {
                q if q < QUESTIONS.len() => {
                    w.put_all(&[QUESTIONS[q], "\" \""]);
                    w.say(&ANSWERS);
                }
                q if q == QUESTIONS.len() => {
                    w.put("What is that sound?\" \"");
                    w.say(&SOUND_ANSWERS);
                }
                _ => {
                    w.put_all(&["Where is the ", c.noun, "?\" \""]);
                    w.say(&WHERE_ANSWERS);
                }
            }
            w.comma_for_full_stop();
            w.put_all(&["\" said ", other, "."]);
        }
        // The sun was shining.
        5 => {
            let cap = connective(w);
            let weather = w.one(&WEATHER);
            w.put_cap(weather, cap);
        }
        // Suddenly, a frog jumped out of a bush.
        _ => {
            let cap = connective(w);
            let animal = w.one(&ANIMALS);
            w.put_a(animal, cap);
            w.put(" ");
            w.say(&ANIMAL_ACTS);
            w.put(".");
        }
    }
}

/// "very happy", "a little scared", "proud".
fn feeling(w: &mut Writer) {
    let very = ["", "very ", "a little "][w.weighted(&[2, 2, 1])];
    w.put(very);
    w.say(&FEELINGS);
}

/// What one person did; `other` is the other person of the story.
fn action(w: &mut Writer, c: &Cast, other: &str) {
    match w.pick(18) {
        0 => {
            w.put(" went to ");
            w.say(&PLACES);
        }
        1 => {
            w.put(" ran all the way to ");
            w.say(&PLACES);
        }
        2 => {
            w.put(" walked to ");
            w.say(&PLACES);
            w.put_all(&[" with ", other]);
        }
        3 => {
            w.put(" saw ");
            let animal = w.one(&ANIMALS);
            w.put_a(animal, false);
            w.put(" near ");
            w.say(&PLACES);
        }
        4 => {
            w.put(" felt ");
            feeling(w);
        }
        5 => {
            w.put(" was ");
            feeling(w);
        }
        6 => {
            w.put(" wanted to ");
            w.say(&WANTS);
        }
        7 => w.put_all(&[" looked at the ", c.noun, " for a long time"]),
        8 => w.put_all(&[" lost the ", c.noun, " and looked everywhere for it"]),
        9 => {
            w.put_all(&[" found the ", c.noun, " "]);
            w.say(&WHERE);
        }
        10 => w.put_all(&[" smiled at ", other]),
        11 => w.put(" sang a happy song"),
        12 => w.put(" laughed and laughed"),
        13 => w.put_all(&[" gave the ", c.noun, " to ", other]),
        14 => {
            w.put(" ate ");
            w.say(&FOODS);
        }
        15 => w.put(" jumped up and down"),
        16 => w.put(" sat under a big tree"),
        _ => w.put_all(&[" hugged ", other]),
    }
    w.put(".");
}

/// What the hero and the friend did together.
fn together(w: &mut Writer, c: &Cast, cap: bool) {
    match w.weighted(&[2, 1, 3]) {
        0 => w.put_all(&[c.name(true), " and ", c.name(false)]),
        1 => w.put_all(&[c.name(false), " and ", c.name(true)]),
        _ => w.put_cap("they", cap),
    }
    match w.pick(8) {
        0 => w.put_all(&[" played with the ", c.noun, " all day"]),
        1 => {
            w.put(" went to ");
            w.say(&PLACES);
            w.put(" together");
        }
        2 => w.put(" ran home as fast as they could"),
        3 => {
            w.put(" were ");
            feeling(w);
        }
        4 => {
            w.put(" shared ");
            w.say(&FOODS);
        }
        5 => w.put_all(&[" looked for the ", c.noun, " everywhere"]),
        6 => w.put(" laughed together"),
        _ => w.put(" built a little house out of sticks"),
    }
    w.put(".");
}

/// Something said aloud, without the quotes.
fn saying(w: &mut Writer, c: &Cast) {
    match w.pick(SAYINGS.len() + 2) {
        i if i < SAYINGS.len() => w.put(SAYINGS[i]),
        i if i == SAYINGS.len() => {
            w.put("Let us go to ");
            w.say(&PLACES);
            w.put("!");
        }
        _ => w.put_all(&["I love this ", c.noun, "!"]),
    }
}

fn ending(w: &mut Writer, c: &Cast) {
    let (hero, friend) = (c.name(true), c.name(false));
    match w.pick(6) {
        0 => w.put_all(&["In the end, ", hero, " went home and smiled."]),
        1 => w.put_all(&[
            "From that day on, ",
            hero,
            " and ",
            friend,
            " were best friends.",
        ]),
        2 => w.put_all(&[
            "That night, ",
            hero,
            " slept with the ",
            c.noun,
            " close by.",
        ]),
        3 => w.put_all(&[hero, " never forgot that day."]),
        4 => w.put("And they lived happily ever after."),
        _ => w.put("It was the best day ever."),
    }
    if w.weighted(&[2, 1]) == 1 {
        w.put(" The end.");
    }
}
