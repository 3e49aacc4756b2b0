//! The shape of the crate, checked: no import circles between the files of `src/`, and the
//! library never reaches for the application's crates.
//!
//! A circle (`comm.rs` uses `schedule.rs`, which uses `comm.rs`) means neither file can be
//! read, tested or replaced on its own. This test reads every `.rs` file under `src/`,
//! builds a FILE-level dependency graph and looks for strongly connected components:
//!
//! ```text
//!  src/**/*.rs  --strip comments, strings, #[cfg(test)] items-->  tokens
//!  tokens       --`use` trees, inline crate::/super::/self:: paths-->  paths
//!  paths        --walk the module tree, follow `pub use` re-exports-->  the DEFINING file
//!  edges file -> file  --Tarjan-->  components of 2+ files  -->  every circle, with the
//!                                                                line behind each edge
//!
//!  src/lib.rs             crate root, module path []      the library: one graph
//!  src/a.rs, src/a/mod.rs module a
//!  src/a/b.rs             module a::b
//!  src/main.rs,           crate roots of binaries         the application: one graph
//!  src/bin/<name>/main.rs (or src/bin/<name>.rs)          per binary
//! ```
//!
//! What is NOT an edge: a file's `mod child;` declarations, and its re-exports (`pub use
//! child::Item`) whose name the file does not use itself: a facade is not a dependency.
//! Everything inside `#[cfg(test)]` items is ignored: tests may reach anywhere.
//!
//! The resolver is small (no macro expansion, no type inference), so its own tests below
//! show on tiny in-memory crates that it finds a circle, follows a re-export, ignores a
//! test module and lets a facade through. What it does not see: calls of methods whose
//! `impl` lives in another file (no path names that file), and `super::` inside an inline
//! `mod x { }` that is not a test module (read as if it were at the top of its file).
//!
//! To list the circles: `cargo test --release --test architecture -- --ignored --nocapture`;
//! every edge with its line: `ARCH_PRINT_GRAPH=1 cargo test --release --test architecture
//! the_real_tree -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::Path;

/// Crates that belong to the application (command line); the library must not use them.
const APP_ONLY_CRATES: &[&str] = &["clap"];

// ---------------------------------------------------------------------------------------
// Reading: source text -> tokens without comments, strings and test-only items
// ---------------------------------------------------------------------------------------

/// Replaces comments, string and char literals by spaces, keeping every newline, so that
/// line numbers still match the file and no `crate::x` inside a doc or string counts.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            // block comments nest in Rust
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // raw string r"..", r#".."#, br#".."#: ends at a quote followed by as many #
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]); // r#ident, not a string
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // 'x' and '\n' are chars; 'a (no closing quote two chars on) is a lifetime
            let end = if next == Some('\\') {
                (i + 3..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str(&" ".repeat(e + 1 - i));
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A word (`crate`, `Comm`, `42`), a `::`, or one punctuation character; `line` is 1-based.
#[derive(Clone, Debug)]
struct Tok {
    text: String,
    line: usize,
}

impl Tok {
    fn is(&self, s: &str) -> bool {
        self.text == s
    }
    fn is_word(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    }
}

fn tokenize(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            toks.push(Tok {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

/// Index one past the bracket that closes the one at `open` (any of `( [ {`).
fn skip_group(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    let mut i = open;
    while i < toks.len() {
        match toks[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

/// Does the attribute whose tokens (inside `#[ ]`) are `attr` switch its item on only in tests?
fn is_test_cfg(attr: &[Tok]) -> bool {
    attr.first().is_some_and(|t| t.is("cfg"))
        && attr.iter().any(|t| t.is("test"))
        && !attr.iter().any(|t| t.is("not"))
}

/// Drops every item under `#[cfg(test)]` (attributes, then the item up to its `;` or the
/// end of its `{ }` body); a file with `#![cfg(test)]` is dropped whole.
fn drop_test_items(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let inner = toks[i].is("#") && toks.get(i + 1).is_some_and(|t| t.is("!"));
        let open = i + 1 + usize::from(inner);
        if toks[i].is("#") && toks.get(open).is_some_and(|t| t.is("[")) {
            let end = skip_group(&toks, open);
            if is_test_cfg(&toks[open + 1..end.saturating_sub(1)]) {
                if inner {
                    return Vec::new();
                }
                // skip further attributes, then the item itself
                let mut j = end;
                while toks.get(j).is_some_and(|t| t.is("#"))
                    && toks.get(j + 1).is_some_and(|t| t.is("["))
                {
                    j = skip_group(&toks, j + 1);
                }
                while j < toks.len() {
                    match toks[j].text.as_str() {
                        ";" => {
                            j += 1;
                            break;
                        }
                        "{" => {
                            j = skip_group(&toks, j);
                            break;
                        }
                        "(" | "[" => j = skip_group(&toks, j),
                        _ => j += 1,
                    }
                }
                i = j;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Parsing: use trees, inline paths, definitions, child modules
// ---------------------------------------------------------------------------------------

/// One name brought in by a `use` declaration.
#[derive(Clone, Debug)]
struct Import {
    /// The path as written (`super::schedule::Schedule`), ending at the item; for
    /// `{self, ..}` it ends at the module.
    path: Vec<String>,
    /// The local name (`Schedule`, or the `as` name); None for a glob or `as _`.
    name: Option<String>,
    /// `use x::*`.
    glob: bool,
    /// `pub use` / `pub(crate) use`: a re-export.
    public: bool,
    line: usize,
}

/// Parses one use tree starting at `i` under `prefix`; returns the index after it.
fn parse_use_tree(
    toks: &[Tok],
    mut i: usize,
    prefix: &[String],
    public: bool,
    out: &mut Vec<Import>,
) -> usize {
    let mut path = prefix.to_vec();
    let line = toks.get(i).map_or(0, |t| t.line);
    loop {
        let Some(t) = toks.get(i) else { return i };
        if t.is("{") {
            i += 1;
            while i < toks.len() && !toks[i].is("}") {
                i = parse_use_tree(toks, i, &path, public, out);
                if toks.get(i).is_some_and(|t| t.is(",")) {
                    i += 1;
                }
            }
            return i + 1;
        }
        if t.is("*") {
            out.push(Import {
                path,
                name: None,
                glob: true,
                public,
                line,
            });
            return i + 1;
        }
        if t.is("::") {
            i += 1;
            continue;
        }
        if !t.is_word() {
            return i; // `,` `}` `;`: an empty tree
        }
        path.push(t.text.clone());
        i += 1;
        if toks.get(i).is_some_and(|t| t.is("::")) {
            continue;
        }
        break;
    }
    // a simple path, perhaps renamed
    let mut name = if path.last().is_some_and(|s| s == "self") {
        path.pop();
        path.last().cloned()
    } else {
        path.last().cloned()
    };
    if toks.get(i).is_some_and(|t| t.is("as")) {
        name = toks.get(i + 1).map(|t| t.text.clone()).filter(|n| n != "_");
        i += 2;
    }
    out.push(Import {
        path,
        name,
        glob: false,
        public,
        line,
    });
    i
}

/// A path written inline in code: `crate::trace::Span`, `super::chunk_range`, `head::mix`.
#[derive(Clone, Debug)]
struct InlinePath {
    segs: Vec<String>,
    line: usize,
}

/// Everything the graph needs from one file.
#[derive(Clone, Debug, Default)]
struct Parsed {
    imports: Vec<Import>,
    paths: Vec<InlinePath>,
    /// Names of items defined at the top of the file (fn, struct, enum, ...; not `mod`).
    defines: HashSet<String>,
    /// `mod x;` declarations (not test ones).
    children: Vec<String>,
    /// Words in code outside `use` declarations: is a re-exported name also used here?
    words: HashSet<String>,
    /// `(line, crate)` for each use of an application-only crate.
    app_uses: Vec<(usize, String)>,
}

/// Drops the path of a restricted visibility, `pub(in crate::a::b)` -> `pub()`: it names
/// where an item may be seen, not something the file uses.
fn drop_visibility_paths(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let restricted = toks[i].is("(")
            && out.last().is_some_and(|t| t.is("pub"))
            && toks.get(i + 1).is_some_and(|t| t.is("in"));
        out.push(toks[i].clone());
        if restricted {
            while i + 1 < toks.len() && !toks[i + 1].is(")") {
                i += 1;
            }
        }
        i += 1;
    }
    out
}

fn parse(src: &str) -> Parsed {
    let toks = drop_visibility_paths(drop_test_items(tokenize(&strip(src))));
    let mut p = Parsed::default();
    let mut in_use = vec![false; toks.len()];
    let mut i = 0;
    while i < toks.len() {
        if toks[i].is("use") {
            // visibility: `pub use` or `pub(...) use`
            let public = (i >= 1 && toks[i - 1].is("pub"))
                || (i >= 1 && toks[i - 1].is(")") && {
                    let open = (0..i - 1).rev().find(|&j| toks[j].is("("));
                    open.is_some_and(|o| o >= 1 && toks[o - 1].is("pub"))
                });
            let end = parse_use_tree(&toks, i + 1, &[], public, &mut p.imports);
            for flag in &mut in_use[i..end.min(toks.len())] {
                *flag = true;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
        let next = toks.get(i + 1);
        if depth == 0 && next.is_some_and(|n| n.is_word() && n.text != "fn") {
            let n = &next.unwrap().text;
            match t.text.as_str() {
                "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union" => {
                    p.defines.insert(n.clone());
                }
                "mod" if toks.get(i + 2).is_some_and(|t| t.is(";")) => {
                    p.children.push(n.clone());
                }
                _ => {}
            }
        }
        if t.is("macro_rules") && next.is_some_and(|n| n.is("!")) {
            if let Some(n) = toks.get(i + 2) {
                p.defines.insert(n.text.clone());
            }
        }
        if APP_ONLY_CRATES.contains(&t.text.as_str())
            && (in_use[i] || next.is_some_and(|n| n.is("::")))
            && !(i >= 1 && toks[i - 1].is("::"))
        {
            p.app_uses.push((t.line, t.text.clone()));
        }
        if in_use[i] || !t.is_word() {
            continue;
        }
        // `mod story;` names a file, it does not use a re-exported `story`
        if !(i >= 1 && toks[i - 1].is("mod")) {
            p.words.insert(t.text.clone());
        }
        // the start of a path: a word followed by `::` word, not itself after `::`
        let starts = !(i >= 1 && toks[i - 1].is("::"))
            && next.is_some_and(|n| n.is("::"))
            && toks.get(i + 2).is_some_and(Tok::is_word);
        if starts {
            let mut segs = vec![t.text.clone()];
            let mut j = i + 1;
            while toks.get(j).is_some_and(|t| t.is("::"))
                && toks.get(j + 1).is_some_and(Tok::is_word)
            {
                segs.push(toks[j + 1].text.clone());
                j += 2;
            }
            p.paths.push(InlinePath { segs, line: t.line });
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// The graph: files, module paths, resolution to the defining file
// ---------------------------------------------------------------------------------------

/// One source file of one crate.
#[derive(Clone, Debug)]
struct SourceFile {
    /// `src/collective/comm.rs`
    path: String,
    /// `lib`, or `bin <name>` for a binary
    krate: String,
    /// `["collective", "comm"]`; `[]` for a crate root
    module: Vec<String>,
    lines: Vec<String>,
    parsed: Parsed,
}

/// Which crate and module a path under `src/` holds, from its location alone.
fn locate(rel: &str) -> Option<(String, Vec<String>)> {
    let rel = rel.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(String::from).collect();
    let krate = if parts[0] == "bin" {
        parts.remove(0);
        let name = parts.remove(0);
        if parts.is_empty() || parts == ["main"] {
            return Some((format!("bin {name}"), Vec::new()));
        }
        format!("bin {name}")
    } else if parts == ["main"] {
        return Some(("bin main".into(), Vec::new()));
    } else if parts == ["lib"] {
        return Some(("lib".into(), Vec::new()));
    } else {
        "lib".into()
    };
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some((krate, parts))
}

/// A dependency: `from` uses something defined in `to`, first at `line` of `from`.
#[derive(Clone, Debug)]
struct Edge {
    from: usize,
    to: usize,
    line: usize,
}

/// Where a path leads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// To a module as a whole (`use crate::trace;`): a name, not yet a dependency.
    Module(usize),
    /// To an item defined in this file.
    Item(usize),
    /// Out of the crate: a file re-exports or imports it from std or another crate.
    Outside,
}

struct Graph {
    files: Vec<SourceFile>,
    /// Files of some crate that no `mod` declaration reaches (not compiled).
    orphans: Vec<String>,
    by_module: HashMap<(String, Vec<String>), usize>,
}

impl Graph {
    /// Builds the graph from `(path relative to the crate, source)` pairs.
    fn new(sources: &[(String, String)]) -> Graph {
        let mut all = Vec::new();
        for (path, src) in sources {
            if let Some((krate, module)) = locate(path) {
                all.push(SourceFile {
                    path: path.clone(),
                    krate,
                    module,
                    lines: src.lines().map(String::from).collect(),
                    parsed: parse(src),
                });
            }
        }
        let index: HashMap<(String, Vec<String>), usize> = all
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.krate.clone(), f.module.clone()), i))
            .collect();
        // keep the files a crate root reaches through `mod` declarations
        let mut reached = vec![false; all.len()];
        let mut queue: VecDeque<usize> = (0..all.len())
            .filter(|&i| all[i].module.is_empty())
            .collect();
        while let Some(i) = queue.pop_front() {
            if std::mem::replace(&mut reached[i], true) {
                continue;
            }
            for child in &all[i].parsed.children {
                let mut m = all[i].module.clone();
                m.push(child.clone());
                if let Some(&c) = index.get(&(all[i].krate.clone(), m)) {
                    queue.push_back(c);
                }
            }
        }
        let mut files = Vec::new();
        let mut orphans = Vec::new();
        for (f, keep) in all.into_iter().zip(reached) {
            if keep {
                files.push(f);
            } else {
                orphans.push(f.path);
            }
        }
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.krate.clone(), f.module.clone()), i))
            .collect();
        Graph {
            files,
            orphans,
            by_module,
        }
    }

    /// Reads every `.rs` file under `root/src`.
    fn from_dir(root: &Path) -> Graph {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    walk(&p, root, out);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy();
                    let src = std::fs::read_to_string(&p).unwrap();
                    out.push((rel.replace('\\', "/"), src));
                }
            }
        }
        let mut sources = Vec::new();
        walk(&root.join("src"), root, &mut sources);
        Graph::new(&sources)
    }

    fn file(&self, krate: &str, module: &[String]) -> Option<usize> {
        self.by_module
            .get(&(krate.to_string(), module.to_vec()))
            .copied()
    }

    /// Turns a path written in file `f` into an absolute module path of f's crate, or None
    /// when it leads outside the crate (std, other crates) or to a local name.
    fn absolute(&self, f: usize, segs: &[String], depth: usize) -> Option<Vec<String>> {
        let file = &self.files[f];
        let first = segs.first()?.as_str();
        if depth > 16 {
            return None;
        }
        match first {
            "crate" => Some(segs[1..].to_vec()),
            "self" => Some([file.module.clone(), segs[1..].to_vec()].concat()),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let base = file.module.len().checked_sub(ups)?;
                Some([file.module[..base].to_vec(), segs[ups..].to_vec()].concat())
            }
            _ if file.parsed.children.iter().any(|c| c == first) => {
                Some([file.module.clone(), segs.to_vec()].concat())
            }
            _ => {
                let import = file
                    .parsed
                    .imports
                    .iter()
                    .find(|im| im.name.as_deref() == Some(first) && im.path.len() > 1)?;
                let base = self.absolute(f, &import.path, depth + 1)?;
                Some([base, segs[1..].to_vec()].concat())
            }
        }
    }

    /// The file that defines what the absolute path `abs` (in `krate`) names: walk down the
    /// module tree as far as files exist, then look the next name up in that file, following
    /// its imports (re-exports) and globs.
    fn definer(&self, krate: &str, abs: &[String], depth: usize) -> Option<Target> {
        let k = (0..=abs.len())
            .rev()
            .find(|&k| self.file(krate, &abs[..k]).is_some())?;
        let m = self.file(krate, &abs[..k])?;
        if k == abs.len() {
            return Some(Target::Module(m));
        }
        Some(
            self.lookup(m, &abs[k], &abs[k + 1..], depth)
                .unwrap_or(Target::Item(m)),
        )
    }

    /// Strict look-up of `name` in module file `m`: None when the file neither defines nor
    /// imports it. `rest` are the segments after the name (an item of a re-exported module).
    fn lookup(&self, m: usize, name: &str, rest: &[String], depth: usize) -> Option<Target> {
        if depth > 16 {
            return None;
        }
        let file = &self.files[m];
        if file.parsed.defines.contains(name) {
            return Some(Target::Item(m));
        }
        let krate = &file.krate;
        if let Some(im) = file
            .parsed
            .imports
            .iter()
            .find(|im| im.name.as_deref() == Some(name))
        {
            // an import from outside the crate is no dependency inside it
            let Some(abs) = self.absolute(m, &im.path, 0) else {
                return Some(Target::Outside);
            };
            return self.definer(krate, &[abs, rest.to_vec()].concat(), depth + 1);
        }
        file.parsed
            .imports
            .iter()
            .filter(|im| im.glob)
            .find_map(|im| {
                let abs = self.absolute(m, &im.path, 0)?;
                match self.definer(krate, &abs, depth + 1)? {
                    Target::Module(g) if g != m => {
                        let found = self.lookup(g, name, rest, depth + 1)?;
                        Some(found)
                    }
                    _ => None,
                }
            })
    }

    /// Every file-to-file dependency, one edge per pair, with its first line.
    fn edges(&self) -> Vec<Edge> {
        let mut first: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for (f, file) in self.files.iter().enumerate() {
            let mut add = |to: usize, line: usize| {
                if to != f {
                    let e = first.entry((f, to)).or_insert(line);
                    *e = (*e).min(line);
                }
            };
            let p = &file.parsed;
            for im in &p.imports {
                // a re-export the file does not use itself is a facade, not a dependency
                let used_here = im.name.as_ref().is_some_and(|n| p.words.contains(n));
                if im.public && !used_here {
                    continue;
                }
                let Some(abs) = self.absolute(f, &im.path, 0) else {
                    continue;
                };
                match self.definer(&file.krate, &abs, 0) {
                    Some(Target::Item(t)) => add(t, im.line),
                    // `use a::b::*` depends on b; `use a::b;` is only a name until used
                    Some(Target::Module(t)) if im.glob => add(t, im.line),
                    _ => {}
                }
            }
            for path in &p.paths {
                let Some(abs) = self.absolute(f, &path.segs, 0) else {
                    continue;
                };
                match self.definer(&file.krate, &abs, 0) {
                    Some(Target::Item(t) | Target::Module(t)) => add(t, path.line),
                    Some(Target::Outside) | None => {}
                }
            }
        }
        first
            .into_iter()
            .map(|((from, to), line)| Edge { from, to, line })
            .collect()
    }

    fn crates(&self) -> BTreeSet<String> {
        self.files.iter().map(|f| f.krate.clone()).collect()
    }

    /// The lines of library files that use an application-only crate.
    fn app_uses_in_library(&self) -> Vec<String> {
        let mut found = Vec::new();
        for f in self.files.iter().filter(|f| f.krate == "lib") {
            for (line, krate) in &f.parsed.app_uses {
                found.push(format!(
                    "{}:{line} uses `{krate}` (application only): {}",
                    f.path,
                    f.lines[line - 1].trim()
                ));
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------------------
// Circles: Tarjan's strongly connected components, then one cycle per uncovered edge
// ---------------------------------------------------------------------------------------

/// Strongly connected components of 2+ nodes (Tarjan), each sorted.
fn components(n: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut adj = vec![Vec::new(); n];
    for e in edges {
        adj[e.from].push(e.to);
    }
    let mut t = Tarjan {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Cycles (as node lists, first == last) that together use every edge inside `comp`:
/// for each edge u -> v not yet shown, the shortest way back from v to u.
fn covering_cycles(comp: &[usize], edges: &[Edge]) -> Vec<Vec<usize>> {
    let inside: HashSet<usize> = comp.iter().copied().collect();
    let local: Vec<(usize, usize)> = edges
        .iter()
        .filter(|e| inside.contains(&e.from) && inside.contains(&e.to))
        .map(|e| (e.from, e.to))
        .collect();
    let mut covered: HashSet<(usize, usize)> = HashSet::new();
    let mut cycles = Vec::new();
    for &(u, v) in &local {
        if covered.contains(&(u, v)) {
            continue;
        }
        // breadth-first from v back to u, inside the component
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([v]);
        let mut seen = HashSet::from([v]);
        while let Some(x) = queue.pop_front() {
            if x == u {
                break;
            }
            for &(a, b) in &local {
                if a == x && seen.insert(b) {
                    prev.insert(b, a);
                    queue.push_back(b);
                }
            }
        }
        let mut back = vec![u];
        let mut x = u;
        while x != v {
            x = prev[&x];
            back.push(x);
        }
        back.reverse(); // v ... u
        let mut cycle = vec![u];
        cycle.extend(back);
        for w in cycle.windows(2) {
            covered.insert((w[0], w[1]));
        }
        cycles.push(cycle);
    }
    cycles
}

/// The readable report of every circle in crate `krate`; empty when there is none.
fn circles_report(g: &Graph, krate: &str) -> String {
    let ids: Vec<usize> = (0..g.files.len())
        .filter(|&i| g.files[i].krate == krate)
        .collect();
    let edges: Vec<Edge> = g
        .edges()
        .into_iter()
        .filter(|e| g.files[e.from].krate == krate)
        .collect();
    let line_of: HashMap<(usize, usize), usize> =
        edges.iter().map(|e| ((e.from, e.to), e.line)).collect();
    let mut out = String::new();
    let comps = components(g.files.len(), &edges);
    for (n, comp) in comps.iter().enumerate() {
        debug_assert!(comp.iter().all(|c| ids.contains(c)));
        let names: Vec<&str> = comp.iter().map(|&i| g.files[i].path.as_str()).collect();
        out += &format!(
            "circle {} ({krate}: {} files: {}):\n",
            n + 1,
            comp.len(),
            names.join(", ")
        );
        for cycle in covering_cycles(comp, &edges) {
            let path: Vec<&str> = cycle.iter().map(|&i| g.files[i].path.as_str()).collect();
            out += &format!("  {}\n", path.join(" -> "));
            for w in cycle.windows(2) {
                let line = line_of[&(w[0], w[1])];
                let file = &g.files[w[0]];
                out += &format!(
                    "      {}:{line}: {}\n",
                    file.path,
                    file.lines[line - 1].trim()
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The checks on the real tree
// ---------------------------------------------------------------------------------------

fn real_tree() -> Graph {
    Graph::from_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn src_has_no_import_circles_and_the_library_uses_no_application_crate() {
    let g = real_tree();
    let mut report = String::new();
    for krate in g.crates() {
        report += &circles_report(&g, &krate);
    }
    let app = g.app_uses_in_library();
    if !app.is_empty() {
        report += "the library uses the application's crates (move this code to src/bin/):\n";
        for line in &app {
            report += &format!("  {line}\n");
        }
    }
    if !g.orphans.is_empty() {
        println!("note: not part of any crate: {}", g.orphans.join(", "));
    }
    println!("{report}");
    assert!(
        report.is_empty(),
        "import circles between the files of src/ (each edge: the line that makes it):\n{report}\
         remedy: move the shared item down into the file both sides use, or merge the files"
    );
}

#[test]
fn the_real_tree_is_read_as_a_library_of_many_files() {
    let g = real_tree();
    let lib: Vec<&SourceFile> = g.files.iter().filter(|f| f.krate == "lib").collect();
    assert!(lib.len() > 10, "only {} library files found", lib.len());
    assert!(lib
        .iter()
        .any(|f| f.path == "src/lib.rs" && f.module.is_empty()));
    let edges = g.edges();
    // ARCH_PRINT_GRAPH=1 prints every edge with its line, to see what the resolver made
    if std::env::var_os("ARCH_PRINT_GRAPH").is_some() {
        for e in &edges {
            let (from, to) = (&g.files[e.from], &g.files[e.to]);
            let line = from.lines[e.line - 1].trim();
            println!("{} -> {}    ({}: {line})", from.path, to.path, e.line);
        }
    }
    assert!(edges.len() > lib.len(), "only {} edges", edges.len());
    // no edge leaves its crate: the application reaches the library only as `nanodist::`
    for e in &edges {
        assert_eq!(g.files[e.from].krate, g.files[e.to].krate, "{e:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The resolver, proven on tiny in-memory crates
// ---------------------------------------------------------------------------------------

fn graph(files: &[(&str, &str)]) -> Graph {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    Graph::new(&sources)
}

/// Edges as `"a.rs -> b.rs"` strings, without the `src/` prefix.
fn edge_names(g: &Graph) -> Vec<String> {
    let name = |i: usize| g.files[i].path.trim_start_matches("src/").to_string();
    g.edges()
        .iter()
        .map(|e| format!("{} -> {}", name(e.from), name(e.to)))
        .collect()
}

#[test]
fn a_two_file_circle_is_found_and_printed_with_its_lines() {
    let g = graph(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A(B);\n"),
        ("src/b.rs", "pub struct B;\nfn f(_: crate::a::A) {}\n"),
    ]);
    assert_eq!(edge_names(&g), ["a.rs -> b.rs", "b.rs -> a.rs"]);
    let report = circles_report(&g, "lib");
    assert!(
        report.contains("src/a.rs -> src/b.rs -> src/a.rs"),
        "{report}"
    );
    assert!(report.contains("src/a.rs:1: use crate::b::B;"), "{report}");
    assert!(
        report.contains("src/b.rs:2: fn f(_: crate::a::A) {}"),
        "{report}"
    );
}

#[test]
fn a_re_export_is_followed_to_the_defining_file() {
    let g = graph(&[
        ("src/lib.rs", "mod m;\nmod x;\n"),
        ("src/m/mod.rs", "mod inner;\npub use inner::Thing;\n"),
        ("src/m/inner.rs", "pub struct Thing(crate::x::X);\n"),
        ("src/x.rs", "use crate::m::Thing;\npub struct X;\n"),
    ]);
    // x.rs depends on inner.rs (where Thing is), not on the facade m/mod.rs
    assert_eq!(edge_names(&g), ["m/inner.rs -> x.rs", "x.rs -> m/inner.rs"]);
    assert!(circles_report(&g, "lib").contains("src/m/inner.rs -> src/x.rs -> src/m/inner.rs"));
    // `pub use self::child::{A, B}` and chains of re-exports are followed too
    let g = graph(&[
        ("src/lib.rs", "mod m;\nmod user;\npub use m::B as Bee;\n"),
        ("src/m/mod.rs", "mod c;\npub use self::c::{A, B};\n"),
        ("src/m/c.rs", "pub struct A;\npub struct B;\n"),
        ("src/user.rs", "fn f(_: crate::Bee) {}\n"),
    ]);
    assert_eq!(edge_names(&g), ["user.rs -> m/c.rs"]);
}

#[test]
fn a_restricted_visibility_is_not_a_use_of_its_path() {
    let g = graph(&[
        ("src/lib.rs", "mod a;\n"),
        ("src/a/mod.rs", "mod b;\nuse b::B;\nfn f(_: B) {}\n"),
        ("src/a/b.rs", "pub(in crate::a) struct B;\n"),
    ]);
    assert_eq!(edge_names(&g), ["a/mod.rs -> a/b.rs"]);
}

#[test]
fn test_modules_comments_and_strings_make_no_edge() {
    let g = graph(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "//! See [`crate::b::B`].\n\
             pub struct A; // crate::b::B\n\
             /* use crate::b::B; /* nested */ crate::b::B */\n\
             const S: &str = \"crate::b::B\";\n\
             const R: &str = r#\"use crate::b::B;\"#;\n\
             fn f<'a>(x: &'a str) -> char { let _ = x; 'c' }\n\
             #[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::b::B;\n    fn g(_: crate::b::B) {}\n}\n\
             #[cfg(test)]\nfn helper() -> crate::b::B { crate::b::B }\n",
        ),
        ("src/b.rs", "use crate::a::A;\npub struct B;\n"),
    ]);
    assert_eq!(edge_names(&g), ["b.rs -> a.rs"]);
    assert_eq!(circles_report(&g, "lib"), "");
}

#[test]
fn a_facade_mod_rs_is_not_a_circle_unless_it_uses_what_it_re_exports() {
    let files = |mod_rs: &'static str| {
        graph(&[
            ("src/lib.rs", "pub mod m;\n"),
            ("src/m/mod.rs", mod_rs),
            (
                "src/m/c.rs",
                "use super::Shared;\npub struct C;\npub fn c(_: Shared) {}\n",
            ),
        ])
    };
    // mod.rs declares c and re-exports C: c.rs may use what mod.rs defines
    let facade = files("mod c;\npub use c::c;\npub use c::C;\npub struct Shared;\n");
    assert_eq!(edge_names(&facade), ["m/c.rs -> m/mod.rs"]);
    assert_eq!(circles_report(&facade, "lib"), "");
    // ...but a mod.rs whose own code uses C depends on c.rs: a circle
    let user = files("mod c;\npub use c::C;\npub struct Shared;\npub fn g(_: C) {}\n");
    assert!(circles_report(&user, "lib").contains("src/m/mod.rs -> src/m/c.rs -> src/m/mod.rs"));
    // a private `use` or a path into a child is a dependency too
    let private = files("mod c;\npub struct Shared;\nfn g() { let _ = c::C; }\n");
    assert_eq!(
        edge_names(&private),
        ["m/mod.rs -> m/c.rs", "m/c.rs -> m/mod.rs"]
    );
}

#[test]
fn groups_renames_globs_and_relative_paths_are_resolved() {
    let g = graph(&[
        ("src/lib.rs", "pub mod p;\npub mod q;\npub mod r;\n"),
        ("src/p/mod.rs", "pub mod deep;\npub struct P;\n"),
        (
            "src/p/deep.rs",
            "use super::super::q::{self, Q as Cue};\nfn f() { q::helper(); }\n",
        ),
        ("src/q.rs", "pub struct Q;\npub fn helper() {}\n"),
        (
            "src/r.rs",
            "use crate::{p::{self, deep::*}};\nfn f(_: p::P) {}\n",
        ),
    ]);
    assert_eq!(
        edge_names(&g),
        ["p/deep.rs -> q.rs", "r.rs -> p/mod.rs", "r.rs -> p/deep.rs"]
    );
    // self:: paths, and files that no `mod` reaches are left out
    let g = graph(&[
        ("src/lib.rs", "mod a;\nfn f() -> self::a::A { todo!() }\n"),
        ("src/a.rs", "pub struct A;\n"),
        ("src/stray.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(edge_names(&g), ["lib.rs -> a.rs"]);
    assert_eq!(g.orphans, ["src/stray.rs"]);
}

#[test]
fn binaries_are_graphs_of_their_own() {
    let g = graph(&[
        ("src/lib.rs", "pub mod a;\n"),
        ("src/a.rs", "pub struct A;\n"),
        (
            "src/bin/tool/main.rs",
            "mod cli;\nuse nanodist::a::A;\nfn main() { cli::run(); }\n",
        ),
        (
            "src/bin/tool/cli.rs",
            "use clap::Parser;\npub fn run() { let _ = crate::main; }\n",
        ),
    ]);
    assert_eq!(
        g.crates(),
        BTreeSet::from(["bin tool".into(), "lib".into()])
    );
    let names = edge_names(&g);
    assert_eq!(
        names,
        [
            "bin/tool/main.rs -> bin/tool/cli.rs",
            "bin/tool/cli.rs -> bin/tool/main.rs"
        ]
    );
    assert!(circles_report(&g, "bin tool").contains("src/bin/tool/main.rs -> src/bin/tool/cli.rs"));
    // the application may use clap; the library may not
    assert!(g.app_uses_in_library().is_empty());
    let g = graph(&[(
        "src/lib.rs",
        "#[derive(clap::Args)]\npub struct Flags;\n// clap::Parser in a comment is fine\n",
    )]);
    let found = g.app_uses_in_library();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("src/lib.rs:1 uses `clap`"),
        "{found:?}"
    );
}
