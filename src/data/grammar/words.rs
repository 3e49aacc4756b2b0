//! The words of the `tales` stories. Within a list every entry is a distinct string, and
//! none is a word of another list that could stand in the same place (the parser checks).

/// The people of the stories: name, is she, what they are.
pub(super) const PEOPLE: [(&str, bool, &str); 16] = [
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
pub(super) const TRAITS: [&str; 10] = [
    "little", "kind", "brave", "curious", "shy", "happy", "clever", "funny", "gentle", "busy",
];
pub(super) const OBJECT_ADJS: [&str; 16] = [
    "red", "blue", "green", "yellow", "shiny", "old", "tiny", "big", "soft", "magic", "wooden",
    "golden", "broken", "funny", "orange", "striped",
];
pub(super) const NOUNS: [&str; 16] = [
    "ball", "kite", "box", "key", "hat", "boat", "book", "map", "drum", "shell", "stone", "cup",
    "bell", "lamp", "feather", "umbrella",
];
pub(super) const PLACES: [&str; 14] = [
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
pub(super) const WHERE: [&str; 7] = [
    "under a tree",
    "near the river",
    "in the sand",
    "behind a rock",
    "in the tall grass",
    "on the path",
    "under the bed",
];
pub(super) const ANIMALS: [&str; 12] = [
    "cat", "dog", "bird", "frog", "rabbit", "owl", "duck", "bear", "mouse", "turtle", "bee",
    "squirrel",
];
pub(super) const ANIMAL_ACTS: [&str; 6] = [
    "jumped out of a bush",
    "ran across the path",
    "made a funny noise",
    "came to say hello",
    "was sleeping in the sun",
    "followed them home",
];
pub(super) const FEELINGS: [&str; 12] = [
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
pub(super) const WANTS: [&str; 8] = [
    "fly like a bird",
    "climb the tallest tree",
    "see the sea",
    "build a sandcastle",
    "find a treasure",
    "play all day",
    "bake a cake",
    "ride a bike",
];
pub(super) const FOODS: [&str; 6] = [
    "a big cake",
    "an apple",
    "some cookies",
    "warm soup",
    "sweet berries",
    "a ham sandwich",
];
pub(super) const MORNINGS: [&str; 6] = ["sunny", "rainy", "cold", "windy", "bright", "snowy"];
pub(super) const WEATHER: [&str; 6] = [
    "the sun was shining.",
    "it started to rain.",
    "the wind was cold.",
    "the sky turned dark.",
    "a rainbow came out.",
    "it was a warm day.",
];
pub(super) const CONNECTIVES: [&str; 6] = [
    "",
    "Then, ",
    "After that, ",
    "Suddenly, ",
    "Later, ",
    "Soon, ",
];
pub(super) const CONNECTIVE_WEIGHTS: [u32; 6] = [6, 2, 1, 2, 1, 1];
pub(super) const SAYINGS: [&str; 11] = [
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
/// Yes-or-no questions, and their answers.
pub(super) const QUESTIONS: [&str; 5] = [
    "Can you help me?",
    "Do you want to play?",
    "Are you hungry?",
    "Will you come with me?",
    "Can I have a turn?",
];
pub(super) const ANSWERS: [&str; 5] = [
    "Yes!",
    "No, thank you.",
    "Of course!",
    "Maybe later.",
    "Yes, let us go!",
];
/// Answers to "What is that sound?" and to "Where is the (object)?".
pub(super) const SOUND_ANSWERS: [&str; 3] = [
    "I do not know.",
    "It is just the wind.",
    "It is a little bird.",
];
pub(super) const WHERE_ANSWERS: [&str; 3] = [
    "I do not know.",
    "It is under the bed.",
    "Let us look for it!",
];
