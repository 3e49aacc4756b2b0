//! The rules of the `tales` grammar: word lists and the shape of a story.
//!
//! A story is written left to right by a [`Writer`], which asks a [`Chooser`] for every
//! random decision. The same rules run in two modes (see [`super::tales`]): with dice, to
//! generate the corpus, and with a script, to parse a story back into its choices.
//!
//! ```text
//!   Tom and the Red Kite                                  title: hero?, adjective, noun
//!   Once upon a time, there was a shy boy named Tom.      opening
//!   He had a friend named Lily.                           the friend
//!   One day, Tom found a red kite under a tree.           the object of the title
//!   Then, he ran all the way to the park. "Wow!" ...      2 to 8 middle sentences
//!   From that day on, Tom and Lily were best friends.     ending, maybe " The end."
//! ```
//!
//! The rules keep one promise, on which the entropy floor rests: *the text shows every
//! choice*. The alternatives of a slot are distinct strings, each slot ends where a fixed
//! string or another slot begins, and sentence forms that could follow one another differ
//! in their words. When a slot is added, `tales::parse` (and its tests) check the promise.

/// A source of decisions: dice when generating, a script when parsing.
///
/// Rust note: the rules take `&mut dyn Chooser`, so one copy of the grammar serves both
/// modes, and the parser cannot drift from the generator.
pub(crate) trait Chooser {
    /// Picks an index into `weights`; option `i` has probability `weights[i] / sum`.
    /// `written` is how many bytes of the story exist when the choice is made.
    fn choose(&mut self, weights: &[u32], written: usize) -> usize;
}

/// The story being written and where its decisions come from.
pub(crate) struct Writer<'a> {
    out: &'a mut String,
    chooser: &'a mut dyn Chooser,
}

/// Weights for a uniform choice among up to 32 options.
const UNIFORM: [u32; 32] = [1; 32];

impl<'a> Writer<'a> {
    pub(crate) fn new(chooser: &'a mut dyn Chooser, out: &'a mut String) -> Self {
        Writer { out, chooser }
    }

    fn weighted(&mut self, weights: &[u32]) -> usize {
        self.chooser.choose(weights, self.out.len())
    }

    fn pick(&mut self, n: usize) -> usize {
        self.weighted(&UNIFORM[..n])
    }

    /// One of `words`, uniformly, not yet written.
    fn one(&mut self, words: &[&'static str]) -> &'static str {
        words[self.pick(words.len())]
    }

    /// Writes one of `words`, uniformly.
    fn say(&mut self, words: &[&'static str]) {
        let word = self.one(words);
        self.put(word);
    }

    fn put(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Writes `s`, with its first letter upper-cased when it starts a sentence.
    fn put_cap(&mut self, s: &str, cap: bool) {
        let mut chars = s.chars();
        match chars.next() {
            Some(first) if cap => {
                self.out.push(first.to_ascii_uppercase());
                self.out.push_str(chars.as_str());
            }
            _ => self.out.push_str(s),
        }
    }

    /// Turns a quote's closing full stop into a comma, as before `said Tom`
    /// (a function of the text so far: no choice).
    fn comma_for_full_stop(&mut self) {
        if self.out.ends_with('.') {
            self.out.pop();
            self.out.push(',');
        }
    }

    /// Writes "a word" or "an word" (the article is a function of the word: no choice).
    fn put_a(&mut self, word: &str, cap: bool) {
        let vowel = word.starts_with(['a', 'e', 'i', 'o', 'u']);
        self.put_cap(if vowel { "an " } else { "a " }, cap);
        self.put(word);
    }
}

/// The people of the stories: name, is she, what they are.
const PEOPLE: [(&str, bool, &str); 16] = [
    ("Tom", false, "boy"),
    ("Lily", true, "girl"),
    ("Ben", false, "boy"),
    ("Mia", true, "girl"),
    ("Sam", false, "boy"),
    ("Anna", true, "girl"),
    ("Max", false, "dog"),
    ("Lucy", true, "girl"),
    ("Jack", false, "boy"),
    ("Rosa", true, "cat"),
    ("Pip", false, "mouse"),
    ("Daisy", true, "duck"),
    ("Finn", false, "fox"),
    ("Ella", true, "rabbit"),
    ("Leo", false, "bear"),
    ("Zoe", true, "girl"),
];
const TRAITS: [&str; 10] = [
    "little", "kind", "brave", "curious", "shy", "happy", "clever", "funny", "gentle", "busy",
];
const OBJECT_ADJS: [&str; 16] = [
    "red", "blue", "green", "yellow", "shiny", "old", "tiny", "big", "soft", "magic", "wooden",
    "golden", "broken", "funny", "orange", "striped",
];
const NOUNS: [&str; 16] = [
    "ball", "kite", "box", "key", "hat", "boat", "book", "map", "drum", "shell", "stone", "cup",
    "bell", "lamp", "feather", "umbrella",
];
const PLACES: [&str; 14] = [
    "the park",
    "the forest",
    "the beach",
    "the farm",
    "the old castle",
    "the river",
    "the garden",
    "the market",
    "the lake",
    "the library",
    "the bakery",
    "the zoo",
    "the school",
    "the big hill",
];
const WHERE: [&str; 7] = [
    "under a tree",
    "near the river",
    "in the sand",
    "behind a rock",
    "in the tall grass",
    "on the path",
    "under the bed",
];
const ANIMALS: [&str; 12] = [
    "cat", "dog", "bird", "frog", "rabbit", "owl", "duck", "bear", "mouse", "turtle", "bee",
    "squirrel",
];
const ANIMAL_ACTS: [&str; 6] = [
    "jumped out of a bush",
    "ran across the path",
    "made a funny noise",
    "came to say hello",
    "was sleeping in the sun",
    "followed them home",
];
const FEELINGS: [&str; 12] = [
    "happy",
    "sad",
    "scared",
    "excited",
    "tired",
    "brave",
    "curious",
    "proud",
    "surprised",
    "sleepy",
    "hungry",
    "lonely",
];
const WANTS: [&str; 8] = [
    "fly like a bird",
    "climb the tallest tree",
    "see the sea",
    "build a sandcastle",
    "find a treasure",
    "play all day",
    "bake a cake",
    "ride a bike",
];
const FOODS: [&str; 6] = [
    "a big cake",
    "an apple",
    "some cookies",
    "warm soup",
    "sweet berries",
    "a ham sandwich",
];
const MORNINGS: [&str; 6] = ["sunny", "rainy", "cold", "windy", "bright", "snowy"];
const WEATHER: [&str; 6] = [
    "the sun was shining.",
    "it started to rain.",
    "the wind was cold.",
    "the sky turned dark.",
    "a rainbow came out.",
    "it was a warm day.",
];
const CONNECTIVES: [&str; 6] = [
    "",
    "Then, ",
    "After that, ",
    "Suddenly, ",
    "Later, ",
    "Soon, ",
];
const CONNECTIVE_WEIGHTS: [u32; 6] = [6, 2, 1, 2, 1, 1];
const SAYINGS: [&str; 11] = [
    "Look at this!",
    "I am so happy!",
    "Can we play?",
    "What is that?",
    "Come with me!",
    "This is fun!",
    "I am hungry.",
    "I want to go home.",
    "Wow!",
    "Be careful!",
    "We did it!",
];
const QUESTIONS: [&str; 5] = [
    "Can you help me?",
    "Do you want to play?",
    "What is that sound?",
    "Are you hungry?",
    "Will you come with me?",
];
const ANSWERS: [&str; 6] = [
    "Yes!",
    "No, thank you.",
    "Of course!",
    "I do not know.",
    "Maybe later.",
    "Yes, let us go!",
];

/// Middle sentences: at least this many, then another with probability 2/3, up to the most.
const MIN_MIDDLE: usize = 2;
const MAX_MIDDLE: usize = 8;

/// Who a story is about, fixed by its first choices.
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
    let titled = w.weighted(&[2, 1]) == 0;
    let mut hero = 0;
    if titled {
        hero = w.pick(PEOPLE.len());
        w.put(PEOPLE[hero].0);
        w.put(" and the ");
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
        w.put(" ");
        w.put(kind);
    };
    match w.weighted(&[3, 2, 2, 2]) {
        0 => {
            w.put("Once upon a time, there was ");
            trait_kind(w);
            w.put(" named ");
            w.put(name);
        }
        1 => {
            w.put("Once upon a time, there lived ");
            trait_kind(w);
            w.put(" called ");
            w.put(name);
        }
        2 => {
            w.put("One ");
            w.say(&MORNINGS);
            w.put(" morning, ");
            w.put(name);
            w.put(" woke up early");
        }
        _ => {
            w.put(name);
            w.put(" was ");
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
    let hero_or_pronoun = |w: &mut Writer, cap: bool| {
        if w.pick(2) == 0 {
            w.put(name);
        } else {
            w.put_cap(if she { "she" } else { "he" }, cap);
        }
    };
    let friend;
    match w.pick(3) {
        0 => {
            hero_or_pronoun(w, true);
            w.put(" had a friend named ");
            friend = other(w);
            w.put(PEOPLE[friend].0);
        }
        1 => {
            w.put(name);
            w.put("'s best friend was ");
            friend = other(w);
            let t = w.one(&TRAITS);
            w.put_a(t, false);
            w.put(" ");
            w.put(PEOPLE[friend].2);
            w.put(" called ");
            w.put(PEOPLE[friend].0);
        }
        _ => {
            w.put("Every day, ");
            hero_or_pronoun(w, false);
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
            w.put(" ");
            w.put(c.noun);
            w.put(" ");
            w.say(&WHERE);
        }
        1 => {
            w.put(c.name(true));
            w.put(" had ");
            w.put_a(c.adj, false);
            w.put(" ");
            w.put(c.noun);
            w.put(" that ");
            w.put(c.he());
            w.put(" loved very much");
        }
        _ => {
            w.put(c.name(false));
            w.put(" gave ");
            w.put(c.name(true));
            w.put(" ");
            w.put_a(c.adj, false);
            w.put(" ");
            w.put(c.noun);
            w.put(" as a present");
        }
    }
    w.put(".");
}

/// Writes a singular subject (the hero's name or pronoun, or the friend's name; only the
/// friend's name, so that "he" always means one person) and returns whether it is the hero.
/// With `with_friend` false the friend is not among the options.
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
        0 => {
            let cap = connective(w);
            let hero = subject(w, c, cap, true);
            action(w, c, c.name(!hero));
        }
        1 => {
            let cap = connective(w);
            together(w, c, cap);
        }
        2 => {
            subject(w, c, true, true);
            w.put(" said, \"");
            saying(w, c);
            w.put("\"");
        }
        3 => {
            w.put("\"");
            saying(w, c);
            w.comma_for_full_stop();
            w.put("\"");
            let form = w.pick(4);
            let name = if w.pick(2) == 0 {
                c.name(true)
            } else {
                c.name(false)
            };
            if form == 0 {
                w.put(" said ");
                w.put(name);
            } else {
                w.put(" ");
                w.put(name);
                w.put([" said", " shouted", " whispered"][form - 1]);
            }
            w.put(".");
        }
        4 => {
            let hero = subject(w, c, true, true);
            w.put(" asked ");
            w.put(c.name(!hero));
            w.put(", \"");
            w.say(&QUESTIONS);
            w.put("\" \"");
            w.say(&ANSWERS);
            w.comma_for_full_stop();
            w.put("\" said ");
            w.put(c.name(!hero));
            w.put(".");
        }
        5 => {
            let cap = connective(w);
            let weather = w.one(&WEATHER);
            w.put_cap(weather, cap);
        }
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

/// What one person did; `other` is the other person of the story.
fn action(w: &mut Writer, c: &Cast, other: &str) {
    let very = |w: &mut Writer| {
        let very = ["", "very ", "a little "][w.weighted(&[2, 2, 1])];
        w.put(very);
        w.say(&FEELINGS);
    };
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
            w.put(" with ");
            w.put(other);
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
            very(w);
        }
        5 => {
            w.put(" was ");
            very(w);
        }
        6 => {
            w.put(" wanted to ");
            w.say(&WANTS);
        }
        7 => {
            w.put(" looked at the ");
            w.put(c.noun);
            w.put(" for a long time");
        }
        8 => {
            w.put(" lost the ");
            w.put(c.noun);
            w.put(" and looked everywhere for it");
        }
        9 => {
            w.put(" found the ");
            w.put(c.noun);
            w.put(" ");
            w.say(&WHERE);
        }
        10 => {
            w.put(" smiled at ");
            w.put(other);
        }
        11 => w.put(" sang a happy song"),
        12 => w.put(" laughed and laughed"),
        13 => {
            w.put(" gave the ");
            w.put(c.noun);
            w.put(" to ");
            w.put(other);
        }
        14 => {
            w.put(" ate ");
            w.say(&FOODS);
        }
        15 => w.put(" jumped up and down"),
        16 => w.put(" sat under a big tree"),
        _ => {
            w.put(" hugged ");
            w.put(other);
        }
    }
    w.put(".");
}

/// What the hero and the friend did together.
fn together(w: &mut Writer, c: &Cast, cap: bool) {
    match w.weighted(&[2, 1, 3]) {
        0 => {
            w.put(c.name(true));
            w.put(" and ");
            w.put(c.name(false));
        }
        1 => {
            w.put(c.name(false));
            w.put(" and ");
            w.put(c.name(true));
        }
        _ => w.put_cap("they", cap),
    }
    match w.pick(8) {
        0 => {
            w.put(" played with the ");
            w.put(c.noun);
            w.put(" all day");
        }
        1 => {
            w.put(" went to ");
            w.say(&PLACES);
            w.put(" together");
        }
        2 => w.put(" ran home as fast as they could"),
        3 => {
            w.put(" were ");
            let very = ["", "very ", "a little "][w.weighted(&[2, 2, 1])];
            w.put(very);
            w.say(&FEELINGS);
        }
        4 => {
            w.put(" shared ");
            w.say(&FOODS);
        }
        5 => {
            w.put(" looked for the ");
            w.put(c.noun);
            w.put(" everywhere");
        }
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
        _ => {
            w.put("I love this ");
            w.put(c.noun);
            w.put("!");
        }
    }
}

fn ending(w: &mut Writer, c: &Cast) {
    match w.pick(6) {
        0 => {
            w.put("In the end, ");
            w.put(c.name(true));
            w.put(" went home and smiled.");
        }
        1 => {
            w.put("From that day on, ");
            w.put(c.name(true));
            w.put(" and ");
            w.put(c.name(false));
            w.put(" were best friends.");
        }
        2 => {
            w.put("That night, ");
            w.put(c.name(true));
            w.put(" slept with the ");
            w.put(c.noun);
            w.put(" close by.");
        }
        3 => {
            w.put(c.name(true));
            w.put(" never forgot that day.");
        }
        4 => w.put("And they lived happily ever after."),
        _ => w.put("It was the best day ever."),
    }
    if w.weighted(&[2, 1]) == 1 {
        w.put(" The end.");
    }
}
