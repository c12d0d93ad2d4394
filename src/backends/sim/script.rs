//! The command vocabulary of simulated containers: a small POSIX-sh subset, parsed into a tree
//! and interpreted against a [`Host`] that supplies time, output and files.
//!
//! The interpreter is deterministic: time only advances through `sleep`, and every output carries
//! the virtual offset (since the container started) at which it happened. The same script at the
//! same offsets therefore produces the same effects, which is what lets a reloaded runtime
//! recompute where a container is in its script (see `runner.rs`).
//!
//! Grammar: lists of commands joined by `;`, newline, `&` (run in sequence: there is no
//! background), `&&` and `||`; `while`/`until … do … done`, `for V in … do … done`,
//! `if … then … elif … else … fi`, `{ …; }`; words with '…', "…", `\` escapes and `$VAR`,
//! `${VAR}`, `$?` and `$((…))` (integer arithmetic) expansion; redirections `>`, `>>`, `N>&M`,
//! `<`; pipelines `a | b` (stages in sequence); `$(…)` command substitution. Subshells `( … )`
//! and backquotes are not simulated: such a script is an unrecognized command.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

/// Why a script could not be parsed (the container then counts as an unrecognized command).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    #[error("{0} is not simulated")]
    Unsupported(String),
    #[error("syntax error: unexpected {0}")]
    Unexpected(String),
    #[error("syntax error: expected {0}")]
    Expected(&'static str),
}

/// Output stream of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A piece of a word: literal text, or a variable expanded at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Lit(String),
    Var {
        name: String,
        quoted: bool,
    },
    /// `$((EXPR))`, evaluated at run time.
    Arith(String),
    /// `$(COMMANDS)`: their stdout, trailing newlines removed.
    Subst {
        node: Box<Node>,
        quoted: bool,
    },
}

/// One shell word.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Word {
    pub parts: Vec<Part>,
    /// Any quoting at all (a quoted word is never a keyword, and `''` is still a word).
    pub quoted: bool,
}

impl Word {
    /// The word as a keyword candidate: unquoted plain text.
    fn keyword(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }
}

/// Where a redirection sends a file descriptor.
#[derive(Clone, Debug, PartialEq)]
pub enum RedirTarget {
    /// `N>&M`
    Fd(u8),
    /// `N>&-`
    Closed,
    /// `N> file`, `N>> file`
    File { path: Word, append: bool },
    /// `< file` (no stdin is simulated: ignored)
    Input(Word),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redir {
    pub fd: u8,
    pub target: RedirTarget,
}

/// A simple command: assignments, words, redirections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Simple {
    pub assigns: Vec<(String, Word)>,
    pub words: Vec<Word>,
    pub redirs: Vec<Redir>,
}

/// How a command joins the previous one in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Seq,
    And,
    Or,
}

/// The parsed program.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Simple(Simple),
    List(Vec<(Conn, Node)>),
    Loop {
        until: bool,
        cond: Box<Node>,
        body: Box<Node>,
    },
    For {
        var: String,
        items: Vec<Word>,
        body: Box<Node>,
    },
    If {
        arms: Vec<(Node, Node)>,
        otherwise: Option<Box<Node>>,
    },
    /// `a | b | c`: each stage's stdout is the next one's stdin (stages run one after the
    /// other, so a producer that never ends never feeds the next stage).
    Pipeline(Vec<Node>),
    /// The image's default command (empty command and args): runs until stopped.
    ImageDefault,
    /// Something outside the vocabulary: runs until stopped (container) or succeeds (exec).
    Unrecognized {
        text: String,
        why: String,
    },
}

/// What SIGTERM does to the container, as set by `trap`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Trap {
    /// SIGTERM ends the container at once (exit 143).
    #[default]
    Default,
    /// `trap '' TERM`: SIGTERM is ignored; only SIGKILL (137) ends it.
    Ignore,
    /// `trap 'CMDS' TERM`: CMDS run at once; the container exits if they `exit`.
    Handler(Arc<Node>),
}

/// How a script finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with `code`; `oom` marks the `oom` step (reason OOMKilled).
    Exit { code: i32, oom: bool },
    /// Runs until a signal stops it (`sleep infinity`, `pause`, unrecognized commands).
    Forever,
}

/// Whose command this is: a container's main process, or an ExecSync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Container,
    Exec,
}

/// A file-system error as the shell reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    ReadOnly,
    IsDir,
    Io,
}

impl FsError {
    fn text(self) -> &'static str {
        match self {
            FsError::NotFound => "No such file or directory",
            FsError::ReadOnly => "Read-only file system",
            FsError::IsDir => "Is a directory",
            FsError::Io => "I/O error",
        }
    }
}

/// Kind of an existing path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File { empty: bool },
    Dir,
}

/// What the interpreter needs from its surroundings. `at` is always the virtual offset since
/// the script started; `seq` numbers outputs so that equal offsets still order.
#[async_trait]
pub trait Host: Send {
    /// Waits until virtual offset `at`.
    async fn wait_until(&mut self, at: Duration);
    fn output(&mut self, at: Duration, seq: u64, stream: Stream, data: &[u8]);
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FsError>;
    fn write_file(&mut self, at: Duration, path: &str, data: &[u8], append: bool) -> Result<(), FsError>;
    fn remove(&mut self, at: Duration, path: &str, recursive: bool) -> Result<(), FsError>;
    fn make_dir(&mut self, at: Duration, path: &str) -> Result<(), FsError>;
    fn kind(&mut self, path: &str) -> Option<FileKind>;
    /// Sorted names in a directory.
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, FsError>;
    fn set_trap(&mut self, trap: Trap);
    /// Wall-clock text for `date` at offset `at`.
    fn date(&self, at: Duration) -> String;
    /// The next chunk of the process's own stdin (an attached client, an exec's client), as it
    /// arrives; `None` at EOF. The default is no stdin at all (`/dev/null`), what a container
    /// without `stdin: true` and an ExecSync have.
    async fn read_stdin(&mut self) -> Option<Bytes> {
        None
    }
    /// Hands over the output produced so far, waiting while the reader is slow (a streaming
    /// exec); a host that writes output at once has nothing to do.
    async fn drain(&mut self) {}
    /// The terminal size as `(rows, cols)` when the process has a terminal (`stty size`).
    fn term_size(&self) -> Option<(u16, u16)> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// The program of a container or exec: `command` + `args` joined; `sh -c SCRIPT` (any shell,
/// any flag cluster containing `c`) is interpreted as a script, anything else as one command.
pub fn program(argv: &[String]) -> Node {
    let Some(first) = argv.first() else {
        return Node::ImageDefault;
    };
    if is_shell(first) {
        if let Some(script) = shell_script_arg(&argv[1..]) {
            return parse_or_unrecognized(script);
        }
        return Node::Unrecognized {
            text: argv.join(" "),
            why: "a shell without -c".to_string(),
        };
    }
    // Already split by the kubelet: no quoting or expansion left to do.
    Node::Simple(Simple {
        assigns: Vec::new(),
        words: argv
            .iter()
            .map(|a| Word {
                parts: vec![Part::Lit(a.clone())],
                quoted: true,
            })
            .collect(),
        redirs: Vec::new(),
    })
}

/// A shell started without a script (`sh`, `bash -i`…): it reads commands from its stdin.
pub fn is_bare_shell(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| is_shell(a)) && argv[1..].iter().all(|a| a.starts_with('-') && !a.contains('c'))
}

fn is_shell(arg0: &str) -> bool {
    matches!(basename(arg0), "sh" | "bash" | "ash" | "dash")
}

/// `-c SCRIPT …` or `-ec SCRIPT …`: the script argument.
fn shell_script_arg(rest: &[String]) -> Option<&str> {
    let mut i = 0;
    let mut saw_c = false;
    while i < rest.len() {
        let a = &rest[i];
        if a.starts_with('-') && a.len() > 1 && !a.starts_with("--") {
            if a.contains('c') {
                saw_c = true;
            }
            i += 1;
            continue;
        }
        return if saw_c { Some(a.as_str()) } else { None };
    }
    None
}

/// Parses a script; a script outside the vocabulary becomes `Unrecognized`.
pub fn parse_or_unrecognized(script: &str) -> Node {
    match parse(script) {
        Ok(node) => node,
        Err(e) => Node::Unrecognized {
            text: script.to_string(),
            why: e.to_string(),
        },
    }
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(Word),
    Semi,
    Newline,
    Amp,
    And,
    Or,
    Pipe,
    Redir { fd: u8, op: RedirOp },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RedirOp {
    Out,
    Append,
    Dup(Option<u8>),
    In,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    /// How deep in `$(…)` this text is.
    depth: usize,
}

impl Lexer<'_> {
    fn tokens(text: &str, depth: usize) -> Result<Vec<Tok>, ParseError> {
        let mut lx = Lexer {
            chars: text.chars().peekable(),
            depth,
        };
        let mut out = Vec::new();
        while let Some(&c) = lx.chars.peek() {
            match c {
                ' ' | '\t' | '\r' => {
                    lx.chars.next();
                }
                '\n' => {
                    lx.chars.next();
                    out.push(Tok::Newline);
                }
                '#' => {
                    while let Some(&c) = lx.chars.peek() {
                        if c == '\n' {
                            break;
                        }
                        lx.chars.next();
                    }
                }
                ';' => {
                    lx.chars.next();
                    if lx.chars.peek() == Some(&';') {
                        return Err(ParseError::Unsupported("case".into()));
                    }
                    out.push(Tok::Semi);
                }
                '&' => {
                    lx.chars.next();
                    if lx.chars.peek() == Some(&'&') {
                        lx.chars.next();
                        out.push(Tok::And);
                    } else {
                        out.push(Tok::Amp);
                    }
                }
                '|' => {
                    lx.chars.next();
                    if lx.chars.peek() == Some(&'|') {
                        lx.chars.next();
                        out.push(Tok::Or);
                    } else {
                        out.push(Tok::Pipe);
                    }
                }
                '(' | ')' => return Err(ParseError::Unsupported("a subshell".into())),
                '`' => return Err(ParseError::Unsupported("command substitution".into())),
                '>' | '<' => out.push(lx.redir(None)?),
                _ => {
                    let w = lx.word()?;
                    // `2>` : a number glued to a redirection operator is its fd.
                    if let (Some(n), Some('>' | '<')) = (digits_only(&w), lx.chars.peek().copied()) {
                        out.push(lx.redir(Some(n))?);
                    } else {
                        out.push(Tok::Word(w));
                    }
                }
            }
        }
        Ok(out)
    }

    fn redir(&mut self, fd: Option<u8>) -> Result<Tok, ParseError> {
        let c = self.chars.next();
        if c == Some('<') {
            return Ok(Tok::Redir {
                fd: fd.unwrap_or(0),
                op: RedirOp::In,
            });
        }
        let fd = fd.unwrap_or(1);
        match self.chars.peek() {
            Some('>') => {
                self.chars.next();
                Ok(Tok::Redir {
                    fd,
                    op: RedirOp::Append,
                })
            }
            Some('&') => {
                self.chars.next();
                if self.chars.peek() == Some(&'-') {
                    self.chars.next();
                    return Ok(Tok::Redir {
                        fd,
                        op: RedirOp::Dup(None),
                    });
                }
                let mut n = String::new();
                while let Some(&c) = self.chars.peek() {
                    if !c.is_ascii_digit() {
                        break;
                    }
                    n.push(c);
                    self.chars.next();
                }
                let target = n
                    .parse::<u8>()
                    .map_err(|_| ParseError::Expected("a file descriptor after >&"))?;
                Ok(Tok::Redir {
                    fd,
                    op: RedirOp::Dup(Some(target)),
                })
            }
            _ => Ok(Tok::Redir { fd, op: RedirOp::Out }),
        }
    }

    fn word(&mut self) -> Result<Word, ParseError> {
        let mut w = Word::default();
        let mut lit = String::new();
        let flush = |lit: &mut String, w: &mut Word| {
            if !lit.is_empty() {
                w.parts.push(Part::Lit(std::mem::take(lit)));
            }
        };
        while let Some(&c) = self.chars.peek() {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '>' | '<' | '(' | ')' => break,
                '\'' => {
                    self.chars.next();
                    w.quoted = true;
                    loop {
                        match self.chars.next() {
                            Some('\'') => break,
                            Some(c) => lit.push(c),
                            None => return Err(ParseError::UnterminatedQuote('\'')),
                        }
                    }
                }
                '"' => {
                    self.chars.next();
                    w.quoted = true;
                    loop {
                        match self.chars.next() {
                            Some('"') => break,
                            Some('\\') => match self.chars.peek() {
                                Some(&n @ ('$' | '`' | '"' | '\\')) => {
                                    self.chars.next();
                                    lit.push(n);
                                }
                                Some('\n') => {
                                    self.chars.next();
                                }
                                _ => lit.push('\\'),
                            },
                            Some('$') => {
                                flush(&mut lit, &mut w);
                                self.dollar(&mut w, &mut lit, true)?;
                            }
                            Some('`') => return Err(ParseError::Unsupported("command substitution".into())),
                            Some(c) => lit.push(c),
                            None => return Err(ParseError::UnterminatedQuote('"')),
                        }
                    }
                }
                '\\' => {
                    self.chars.next();
                    match self.chars.next() {
                        Some('\n') | None => {}
                        Some(c) => {
                            w.quoted = true;
                            lit.push(c);
                        }
                    }
                }
                '$' => {
                    self.chars.next();
                    flush(&mut lit, &mut w);
                    self.dollar(&mut w, &mut lit, false)?;
                }
                '`' => return Err(ParseError::Unsupported("command substitution".into())),
                _ => {
                    self.chars.next();
                    lit.push(c);
                }
            }
        }
        flush(&mut lit, &mut w);
        Ok(w)
    }

    /// After a `$`: a variable reference, or a literal `$`.
    fn dollar(&mut self, w: &mut Word, lit: &mut String, quoted: bool) -> Result<(), ParseError> {
        match self.chars.peek().copied() {
            Some('{') => {
                self.chars.next();
                let mut name = String::new();
                loop {
                    match self.chars.next() {
                        Some('}') => break,
                        Some(c) if is_name_char(c) || (name.is_empty() && c == '?') => name.push(c),
                        Some(_) => return Err(ParseError::Unsupported("${…} operators".into())),
                        None => return Err(ParseError::Expected("}")),
                    }
                }
                w.parts.push(Part::Var { name, quoted });
            }
            Some('(') => {
                self.chars.next();
                if self.chars.peek() != Some(&'(') {
                    let node = self.substitution()?;
                    w.parts.push(Part::Subst {
                        node: Box::new(node),
                        quoted,
                    });
                    return Ok(());
                }
                self.chars.next();
                let mut depth = 0usize;
                let mut expr = String::new();
                loop {
                    match self.chars.next() {
                        Some('(') => {
                            depth += 1;
                            expr.push('(');
                        }
                        Some(')') if depth == 0 => {
                            if self.chars.next() != Some(')') {
                                return Err(ParseError::Expected("))"));
                            }
                            break;
                        }
                        Some(')') => {
                            depth -= 1;
                            expr.push(')');
                        }
                        Some(c) => expr.push(c),
                        None => return Err(ParseError::Expected("))")),
                    }
                }
                w.parts.push(Part::Arith(expr));
            }
            Some(c @ ('?' | '$' | '#' | '0'..='9')) => {
                self.chars.next();
                w.parts.push(Part::Var {
                    name: c.to_string(),
                    quoted,
                });
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(&c) = self.chars.peek() {
                    if !is_name_char(c) {
                        break;
                    }
                    name.push(c);
                    self.chars.next();
                }
                w.parts.push(Part::Var { name, quoted });
            }
            _ => lit.push('$'),
        }
        Ok(())
    }
}

impl Lexer<'_> {
    /// After `$(`: the commands up to the matching `)`, parsed.
    fn substitution(&mut self) -> Result<Node, ParseError> {
        if self.depth >= MAX_NESTING {
            return Err(ParseError::Unsupported(format!("nesting deeper than {MAX_NESTING}")));
        }
        let mut text = String::new();
        let mut depth = 1usize;
        let mut quote: Option<char> = None;
        loop {
            let c = self.chars.next().ok_or(ParseError::Expected(")"))?;
            match (quote, c) {
                (Some(q), c) if c == q => {
                    quote = None;
                    text.push(c);
                }
                (Some('"'), '\\') | (None, '\\') => {
                    text.push(c);
                    if let Some(n) = self.chars.next() {
                        text.push(n);
                    }
                }
                (Some(_), c) => text.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    text.push(c);
                }
                (None, '(') => {
                    depth += 1;
                    text.push(c);
                }
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    text.push(c);
                }
                (None, c) => text.push(c),
            }
        }
        parse_at(&text, self.depth + 1)
    }
}

fn digits_only(w: &Word) -> Option<u8> {
    match w.parts.as_slice() {
        [Part::Lit(s)] if !w.quoted && !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// Parses a script into a tree.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    parse_at(text, 0)
}

fn parse_at(text: &str, depth: usize) -> Result<Node, ParseError> {
    let toks = Lexer::tokens(text, depth)?;
    let mut p = Parser { toks, pos: 0, depth: 0 };
    let node = p.list(&[])?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(ParseError::Unexpected(describe(t)));
    }
    Ok(node)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => match w.keyword() {
            Some(k) => format!("\"{k}\""),
            None => "word".to_string(),
        },
        Tok::Semi => "\";\"".into(),
        Tok::Newline => "newline".into(),
        Tok::Amp => "\"&\"".into(),
        Tok::And => "\"&&\"".into(),
        Tok::Or => "\"||\"".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::Redir { .. } => "redirection".into(),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

/// Nesting of compound commands beyond which a script is refused (the parser and the
/// interpreter recurse; a pod spec must not be able to overflow the stack).
const MAX_NESTING: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_keyword(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => w.keyword(),
            _ => None,
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(Tok::Semi | Tok::Newline | Tok::Amp)) {
            self.pos += 1;
        }
    }

    fn skip_newlines(&mut self) {
        while matches!(self.peek(), Some(Tok::Newline)) {
            self.pos += 1;
        }
    }

    fn expect_keyword(&mut self, kw: &'static str) -> Result<(), ParseError> {
        if self.peek_keyword() == Some(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(ParseError::Expected(kw))
        }
    }

    /// A command list, up to (not including) one of `terminators` at command position.
    fn list(&mut self, terminators: &[&str]) -> Result<Node, ParseError> {
        let mut items: Vec<(Conn, Node)> = Vec::new();
        let mut conn = Conn::Seq;
        loop {
            if conn == Conn::Seq {
                self.skip_separators();
            } else {
                self.skip_newlines();
            }
            match self.peek() {
                None => break,
                Some(_) if self.peek_keyword().is_some_and(|k| terminators.contains(&k)) => break,
                Some(_) => {}
            }
            let cmd = self.pipeline()?;
            items.push((conn, cmd));
            conn = match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    Conn::And
                }
                Some(Tok::Or) => {
                    self.pos += 1;
                    Conn::Or
                }
                Some(Tok::Semi | Tok::Newline | Tok::Amp) => Conn::Seq,
                None => {
                    conn = Conn::Seq;
                    break;
                }
                Some(t) => return Err(ParseError::Unexpected(describe(t))),
            };
        }
        if conn != Conn::Seq {
            return Err(ParseError::Expected("a command after && or ||"));
        }
        Ok(if items.len() == 1 {
            items.remove(0).1
        } else {
            Node::List(items)
        })
    }

    fn pipeline(&mut self) -> Result<Node, ParseError> {
        let first = self.command()?;
        if !matches!(self.peek(), Some(Tok::Pipe)) {
            return Ok(first);
        }
        let mut stages = vec![first];
        while matches!(self.peek(), Some(Tok::Pipe)) {
            self.pos += 1;
            self.skip_newlines();
            stages.push(self.command()?);
        }
        Ok(Node::Pipeline(stages))
    }

    fn command(&mut self) -> Result<Node, ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ParseError::Unsupported(format!("nesting deeper than {MAX_NESTING}")));
        }
        let node = self.compound_or_simple();
        self.depth -= 1;
        node
    }

    fn compound_or_simple(&mut self) -> Result<Node, ParseError> {
        match self.peek_keyword() {
            Some(kw @ ("while" | "until")) => {
                let until = kw == "until";
                self.pos += 1;
                let cond = self.list(&["do"])?;
                self.expect_keyword("do")?;
                let body = self.list(&["done"])?;
                self.expect_keyword("done")?;
                Ok(Node::Loop {
                    until,
                    cond: Box::new(cond),
                    body: Box::new(body),
                })
            }
            Some("for") => {
                self.pos += 1;
                let var = match self.peek() {
                    Some(Tok::Word(w)) => w.keyword().map(str::to_string).ok_or(ParseError::Expected("a name"))?,
                    _ => return Err(ParseError::Expected("a name")),
                };
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek_keyword() == Some("in") {
                    self.pos += 1;
                    while let Some(Tok::Word(w)) = self.peek() {
                        items.push(w.clone());
                        self.pos += 1;
                    }
                }
                self.skip_separators();
                self.expect_keyword("do")?;
                let body = self.list(&["done"])?;
                self.expect_keyword("done")?;
                Ok(Node::For {
                    var,
                    items,
                    body: Box::new(body),
                })
            }
            Some("if") => {
                self.pos += 1;
                let mut arms = Vec::new();
                let mut otherwise = None;
                loop {
                    let cond = self.list(&["then"])?;
                    self.expect_keyword("then")?;
                    let body = self.list(&["elif", "else", "fi"])?;
                    arms.push((cond, body));
                    match self.peek_keyword() {
                        Some("elif") => {
                            self.pos += 1;
                        }
                        Some("else") => {
                            self.pos += 1;
                            otherwise = Some(Box::new(self.list(&["fi"])?));
                            self.expect_keyword("fi")?;
                            break;
                        }
                        _ => {
                            self.expect_keyword("fi")?;
                            break;
                        }
                    }
                }
                Ok(Node::If { arms, otherwise })
            }
            Some("{") => {
                self.pos += 1;
                let body = self.list(&["}"])?;
                self.expect_keyword("}")?;
                Ok(body)
            }
            Some(kw @ ("do" | "done" | "then" | "elif" | "else" | "fi" | "}" | "in")) => {
                Err(ParseError::Unexpected(format!("\"{kw}\"")))
            }
            Some("case" | "function" | "select") => Err(ParseError::Unsupported("case/function".into())),
            _ => self.simple(),
        }
    }

    fn simple(&mut self) -> Result<Node, ParseError> {
        let mut s = Simple::default();
        loop {
            match self.peek().cloned() {
                Some(Tok::Word(w)) => {
                    self.pos += 1;
                    if s.words.is_empty() {
                        if let Some((name, value)) = assignment(&w) {
                            s.assigns.push((name, value));
                            continue;
                        }
                    }
                    s.words.push(w);
                }
                Some(Tok::Redir { fd, op }) => {
                    self.pos += 1;
                    let target = match op {
                        RedirOp::Dup(Some(n)) => RedirTarget::Fd(n),
                        RedirOp::Dup(None) => RedirTarget::Closed,
                        RedirOp::Out | RedirOp::Append | RedirOp::In => {
                            let path = match self.peek() {
                                Some(Tok::Word(w)) => w.clone(),
                                _ => return Err(ParseError::Expected("a file name after a redirection")),
                            };
                            self.pos += 1;
                            if op == RedirOp::In {
                                RedirTarget::Input(path)
                            } else {
                                RedirTarget::File {
                                    path,
                                    append: op == RedirOp::Append,
                                }
                            }
                        }
                    };
                    s.redirs.push(Redir { fd, target });
                }
                _ => break,
            }
        }
        if s.words.is_empty() && s.assigns.is_empty() && s.redirs.is_empty() {
            return Err(match self.peek() {
                Some(t) => ParseError::Unexpected(describe(t)),
                None => ParseError::Expected("a command"),
            });
        }
        Ok(Node::Simple(s))
    }
}

/// `NAME=value` at command position (the name part must be unquoted).
fn assignment(w: &Word) -> Option<(String, Word)> {
    let Some(Part::Lit(first)) = w.parts.first() else {
        return None;
    };
    let eq = first.find('=')?;
    let name = &first[..eq];
    if name.is_empty() || !name.chars().all(is_name_char) || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    // A quote inside the name part would make `w.quoted` ambiguous; the lexer only quotes
    // whole parts, so the first literal before '=' came from unquoted or quoted text alike.
    let mut rest = vec![Part::Lit(first[eq + 1..].to_string())];
    rest.extend(w.parts[1..].iter().cloned());
    Some((
        name.to_string(),
        Word {
            parts: rest,
            quoted: true,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Interpreter

/// Early exit of the interpreter.
enum Flow {
    Exit { code: i32, oom: bool },
    Forever,
}

/// Zero-time loop iterations allowed before a loop counts as "runs forever" (a `while true`
/// without `sleep` would otherwise spin).
const MAX_ZERO_TIME_ITERATIONS: u32 = 100;

/// Output sink of one file descriptor while a command runs.
#[derive(Clone, Debug, PartialEq)]
enum Sink {
    Stream(Stream),
    Null,
    File(String),
}

/// A script interpreter over a host.
pub struct Interp<H: Host> {
    pub host: H,
    vars: BTreeMap<String, String>,
    status: i32,
    now: Duration,
    seq: u64,
    mode: Mode,
    /// Input of the current pipeline stage, consumed by the first reader (None: the host's
    /// own stdin, see [`Host::read_stdin`]).
    stdin: Option<Vec<u8>>,
    /// While a pipeline stage runs, its stdout goes here instead of the container's stdout.
    capture: Option<Vec<u8>>,
    /// Depth of `$(…)` being evaluated.
    substituting: usize,
}

impl<H: Host> Interp<H> {
    /// `env` is the container environment; `start` the virtual offset at which this run begins
    /// (0 for a container, "now" for a trap handler); `seq` the first output sequence number.
    pub fn new(
        host: H,
        env: impl IntoIterator<Item = (String, String)>,
        mode: Mode,
        start: Duration,
        seq: u64,
    ) -> Self {
        Self {
            host,
            vars: env.into_iter().collect(),
            status: 0,
            now: start,
            seq,
            mode,
            stdin: None,
            capture: None,
            substituting: 0,
        }
    }

    /// The virtual offset the interpreter has reached.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Runs `node` to its end.
    pub async fn run(&mut self, node: &Node) -> Outcome {
        match self.exec(node).await {
            Ok(()) => Outcome::Exit {
                code: self.status,
                oom: false,
            },
            Err(Flow::Exit { code, oom }) => Outcome::Exit { code, oom },
            Err(Flow::Forever) => Outcome::Forever,
        }
    }

    /// Runs one command line of an interactive shell: `None` when the shell goes on, the
    /// outcome when the line ended the shell (`exit`, or a command that runs until stopped).
    pub async fn run_line(&mut self, node: &Node) -> Option<Outcome> {
        match self.exec(node).await {
            Ok(()) => None,
            Err(Flow::Exit { code, oom }) => Some(Outcome::Exit { code, oom }),
            Err(Flow::Forever) => Some(Outcome::Forever),
        }
    }

    /// Sets a shell variable (what an interactive shell does with `LINES`/`COLUMNS` on resize).
    pub fn set_var(&mut self, name: &str, value: String) {
        self.vars.insert(name.to_string(), value);
    }

    /// Status of the last command (`$?`).
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The next chunk of this command's stdin: the pipeline stage's input (all of it, once), or
    /// the host's stdin as it arrives.
    async fn next_input(&mut self) -> Option<Bytes> {
        match &mut self.stdin {
            Some(buf) if buf.is_empty() => None,
            Some(buf) => Some(Bytes::from(std::mem::take(buf))),
            None => self.host.read_stdin().await,
        }
    }

    /// All of this command's stdin, up to EOF.
    async fn all_input(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_input().await {
            all.extend_from_slice(&chunk);
        }
        all
    }

    fn exec<'a>(&'a mut self, node: &'a Node) -> BoxFuture<'a, Result<(), Flow>> {
        Box::pin(async move {
            match node {
                Node::Simple(s) => self.simple(s).await,
                Node::List(items) => {
                    for (conn, n) in items {
                        let run = match conn {
                            Conn::Seq => true,
                            Conn::And => self.status == 0,
                            Conn::Or => self.status != 0,
                        };
                        if run {
                            self.exec(n).await?;
                        }
                    }
                    Ok(())
                }
                Node::Loop { until, cond, body } => {
                    let mut zero_time = 0u32;
                    let mut last = 0;
                    loop {
                        let before = self.now;
                        self.exec(cond).await?;
                        if (self.status == 0) == *until {
                            break;
                        }
                        self.exec(body).await?;
                        last = self.status;
                        if self.now == before {
                            zero_time += 1;
                            if zero_time >= MAX_ZERO_TIME_ITERATIONS {
                                self.note("a loop without sleep is treated as long-running");
                                return Err(Flow::Forever);
                            }
                        } else {
                            zero_time = 0;
                        }
                    }
                    self.status = last;
                    Ok(())
                }
                Node::For { var, items, body } => {
                    let mut values = Vec::new();
                    for w in items {
                        values.extend(self.expand(w).await?);
                    }
                    self.status = 0;
                    for v in values {
                        self.vars.insert(var.clone(), v);
                        self.exec(body).await?;
                    }
                    Ok(())
                }
                Node::If { arms, otherwise } => {
                    for (cond, body) in arms {
                        self.exec(cond).await?;
                        if self.status == 0 {
                            return self.exec(body).await;
                        }
                    }
                    self.status = 0;
                    if let Some(o) = otherwise {
                        self.exec(o).await?;
                    }
                    Ok(())
                }
                Node::Pipeline(stages) => {
                    let outer_capture = self.capture.take();
                    let outer_stdin = self.stdin.take();
                    let mut input = outer_stdin.clone();
                    let mut result = Ok(());
                    for (i, stage) in stages.iter().enumerate() {
                        let last = i + 1 == stages.len();
                        self.stdin = input.take();
                        self.capture = if last { outer_capture.clone() } else { Some(Vec::new()) };
                        // Every stage runs in a subshell: `exit` ends the stage, not the script.
                        match self.exec(stage).await {
                            Ok(()) => {}
                            Err(Flow::Exit { code, oom: false }) => self.status = code,
                            Err(other) => {
                                result = Err(other);
                                break;
                            }
                        }
                        if !last {
                            input = Some(self.capture.take().unwrap_or_default());
                        }
                    }
                    // The last stage may have added to an enclosing capture.
                    let produced = self.capture.take();
                    self.capture = if outer_capture.is_some() { produced } else { None };
                    self.stdin = outer_stdin;
                    result
                }
                Node::ImageDefault => Err(Flow::Forever),
                Node::Unrecognized { text, why } => self.unrecognized(text, why),
            }
        })
    }

    fn unrecognized(&mut self, text: &str, why: &str) -> Result<(), Flow> {
        match self.mode {
            // A value is wanted, not a server: `$(uname -n)` yields nothing rather than hang.
            Mode::Container if self.substituting > 0 => {
                self.note(&format!(
                    "{text:?} is not simulated ({why}); in $(…) it outputs nothing"
                ));
                self.status = 0;
                Ok(())
            }
            Mode::Container => {
                self.note(&format!(
                    "{text:?} is not simulated ({why}); treating it as long-running"
                ));
                Err(Flow::Forever)
            }
            // An exec of an unknown command (a health-check binary…) is assumed to succeed.
            Mode::Exec => {
                self.status = 0;
                Ok(())
            }
        }
    }

    fn note(&mut self, msg: &str) {
        let line = format!("sim: {msg}\n");
        self.emit(&Sink::Stream(Stream::Stderr), line.as_bytes(), &mut BTreeMap::new());
    }

    fn emit(&mut self, sink: &Sink, data: &[u8], files: &mut BTreeMap<String, Vec<u8>>) {
        if data.is_empty() {
            return;
        }
        match sink {
            Sink::Stream(Stream::Stdout) if self.capture.is_some() => {
                if let Some(c) = self.capture.as_mut() {
                    c.extend_from_slice(data);
                }
            }
            Sink::Stream(s) => {
                self.seq += 1;
                self.host.output(self.now, self.seq, *s, data);
            }
            Sink::Null => {}
            Sink::File(p) => files.entry(p.clone()).or_default().extend_from_slice(data),
        }
    }

    /// Expands a word into fields (unquoted variables and substitutions split on whitespace).
    fn expand<'a>(&'a mut self, w: &'a Word) -> BoxFuture<'a, Result<Vec<String>, Flow>> {
        Box::pin(async move {
            let mut fields: Vec<String> = Vec::new();
            let mut cur = String::new();
            let mut have = w.quoted;
            for p in &w.parts {
                match p {
                    Part::Lit(s) => {
                        cur.push_str(s);
                        have = true;
                    }
                    Part::Arith(expr) => {
                        cur.push_str(&arith(expr, &|n| self.var(n)).unwrap_or(0).to_string());
                        have = true;
                    }
                    Part::Var { name, quoted } => {
                        let v = self.var(name);
                        split_into(&v, *quoted, &mut fields, &mut cur, &mut have);
                    }
                    Part::Subst { node, quoted } => {
                        let v = self.substitute(node).await?;
                        split_into(&v, *quoted, &mut fields, &mut cur, &mut have);
                    }
                }
            }
            if have {
                fields.push(cur);
            }
            Ok(fields)
        })
    }

    async fn expand_one(&mut self, w: &Word) -> Result<String, Flow> {
        Ok(self.expand(w).await?.join(" "))
    }

    /// Runs `$(…)`: its stdout without trailing newlines. Like a subshell, `exit` ends only it.
    async fn substitute(&mut self, node: &Node) -> Result<String, Flow> {
        let outer_capture = self.capture.replace(Vec::new());
        let outer_stdin = self.stdin.take();
        self.substituting += 1;
        let result = self.exec(node).await;
        self.substituting -= 1;
        let out = std::mem::replace(&mut self.capture, outer_capture).unwrap_or_default();
        self.stdin = outer_stdin;
        match result {
            Ok(()) => {}
            Err(Flow::Exit { code, oom: false }) => self.status = code,
            Err(other) => return Err(other),
        }
        let mut text = String::from_utf8_lossy(&out).into_owned();
        while text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    fn var(&self, name: &str) -> String {
        match name {
            "?" => self.status.to_string(),
            "$" => "1".to_string(),
            "#" => "0".to_string(),
            "0" => "sh".to_string(),
            _ => self.vars.get(name).cloned().unwrap_or_default(),
        }
    }

    async fn simple(&mut self, s: &Simple) -> Result<(), Flow> {
        for (name, value) in &s.assigns {
            let v = self.expand_one(value).await?;
            self.vars.insert(name.clone(), v);
        }
        let mut argv: Vec<String> = Vec::new();
        for w in &s.words {
            argv.extend(self.expand(w).await?);
        }
        // Redirections: fds 1 and 2 start on the container's streams.
        let mut out = Sink::Stream(Stream::Stdout);
        let mut err = Sink::Stream(Stream::Stderr);
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in &s.redirs {
            let sink = match &r.target {
                RedirTarget::Input(_) => continue,
                RedirTarget::Closed => Sink::Null,
                RedirTarget::Fd(1) => out.clone(),
                RedirTarget::Fd(2) => err.clone(),
                RedirTarget::Fd(_) => Sink::Null,
                RedirTarget::File { path, append } => {
                    let p = self.expand_one(path).await?;
                    match p.as_str() {
                        "/dev/null" => Sink::Null,
                        "/dev/stdout" | "/proc/self/fd/1" => Sink::Stream(Stream::Stdout),
                        "/dev/stderr" | "/proc/self/fd/2" => Sink::Stream(Stream::Stderr),
                        _ => {
                            // `>` truncates (creates) the file before the command runs.
                            let res = self.host.write_file(self.now, &p, b"", *append);
                            if let Err(e) = res {
                                let msg = format!("sh: can't create {p}: {}\n", e.text());
                                self.emit(&err.clone(), msg.as_bytes(), &mut files);
                                self.status = 1;
                                return Ok(());
                            }
                            Sink::File(p)
                        }
                    }
                }
            };
            match r.fd {
                1 => out = sink,
                2 => err = sink,
                _ => {}
            }
        }
        let res = if argv.is_empty() {
            self.status = 0;
            Ok(())
        } else {
            self.builtin(&argv, &out, &err, &mut files).await
        };
        for (path, data) in files {
            if let Err(e) = self.host.write_file(self.now, &path, &data, true) {
                let msg = format!("sh: write error: {}\n", e.text());
                self.emit(&err, msg.as_bytes(), &mut BTreeMap::new());
                self.status = 1;
            }
        }
        res
    }

    async fn builtin(
        &mut self,
        argv: &[String],
        out: &Sink,
        err: &Sink,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), Flow> {
        let name = basename(&argv[0]);
        let args = &argv[1..];
        let previous = self.status;
        self.status = 0;
        match name {
            "sleep" => {
                let mut total = Duration::ZERO;
                if args.is_empty() {
                    self.emit(err, b"sleep: missing operand\n", files);
                    self.status = 1;
                    return Ok(());
                }
                for a in args {
                    match parse_sleep(a) {
                        Some(SleepArg::Infinity) => return Err(Flow::Forever),
                        Some(SleepArg::For(d)) => total += d,
                        None => {
                            let msg = format!("sleep: invalid number '{a}'\n");
                            self.emit(err, msg.as_bytes(), files);
                            self.status = 1;
                            return Ok(());
                        }
                    }
                }
                self.sleep(total).await;
            }
            "pause" => return Err(Flow::Forever),
            "exit" => {
                let code = match args.first() {
                    None => previous,
                    Some(a) => match a.parse::<i64>() {
                        Ok(n) => n.rem_euclid(256) as i32,
                        Err(_) => {
                            let msg = format!("sh: exit: Illegal number: {a}\n");
                            self.emit(err, msg.as_bytes(), files);
                            2
                        }
                    },
                };
                return Err(Flow::Exit { code, oom: false });
            }
            "true" | ":" | "wait" | "set" | "cd" | "ulimit" | "umask" | "shift" | "sync" => {}
            "false" => self.status = 1,
            "export" | "readonly" | "local" => {
                for a in args {
                    if let Some((k, v)) = a.split_once('=') {
                        self.vars.insert(k.to_string(), v.to_string());
                    }
                }
            }
            "unset" => {
                for a in args {
                    self.vars.remove(a);
                }
            }
            "echo" => {
                let text = echo(args);
                self.emit(out, text.as_bytes(), files);
            }
            "printf" => match args.split_first() {
                Some((fmt, rest)) => {
                    let text = printf(fmt, rest);
                    self.emit(out, text.as_bytes(), files);
                }
                None => {
                    self.emit(err, b"printf: missing format\n", files);
                    self.status = 1;
                }
            },
            "oom" => return Err(Flow::Exit { code: 137, oom: true }),
            "fail-after" => {
                let d = args.first().and_then(|a| match parse_sleep(a) {
                    Some(SleepArg::For(d)) => Some(d),
                    _ => None,
                });
                match d {
                    Some(d) => {
                        self.sleep(d).await;
                        return Err(Flow::Exit { code: 1, oom: false });
                    }
                    None => {
                        self.emit(err, b"fail-after: invalid number\n", files);
                        self.status = 1;
                    }
                }
            }
            "trap" => self.trap(args),
            "exec" => {
                if !args.is_empty() {
                    return Box::pin(self.builtin(args, out, err, files)).await;
                }
            }
            "sh" | "bash" | "ash" | "dash" => match shell_script_arg(args) {
                Some(script) => {
                    let node = parse_or_unrecognized(script);
                    return self.exec(&node).await;
                }
                None => return self.unrecognized(&argv.join(" "), "a shell without -c"),
            },
            "cat" => {
                let files_given: Vec<&String> = args.iter().filter(|a| !a.starts_with('-') || *a == "-").collect();
                // stdin is copied chunk by chunk as it arrives (a streaming exec's `cat`).
                if files_given.is_empty() {
                    while let Some(chunk) = self.next_input().await {
                        self.emit(out, &chunk, files);
                    }
                }
                for a in files_given {
                    if a == "-" {
                        while let Some(chunk) = self.next_input().await {
                            self.emit(out, &chunk, files);
                        }
                        continue;
                    }
                    match self.host.read_file(a) {
                        Ok(data) => self.emit(out, &data, files),
                        Err(e) => {
                            let msg = format!("cat: can't open '{a}': {}\n", e.text());
                            self.emit(err, msg.as_bytes(), files);
                            self.status = 1;
                        }
                    }
                }
            }
            "grep" | "head" | "tail" | "wc" | "tee" => {
                let (flags, operands) = split_flags(name, args);
                let (input, rest) = match name {
                    // grep's first operand is the pattern; tee's operands are outputs.
                    "grep" => (operands.get(1..).unwrap_or(&[]).to_vec(), operands.first().cloned()),
                    "tee" => (Vec::new(), None),
                    _ => (operands.clone(), None),
                };
                if let Some(n) = (name == "head").then(|| byte_count_flag(args)).flatten() {
                    self.head_bytes(n, &input, out, err, files).await;
                    return Ok(());
                }
                let mut text = Vec::new();
                if input.is_empty() {
                    // A byte count of stdin streams: nothing is kept.
                    if name == "wc" && flags == "c" {
                        let mut n = 0usize;
                        while let Some(chunk) = self.next_input().await {
                            n += chunk.len();
                        }
                        let line = format!("{n}\n");
                        self.emit(out, line.as_bytes(), files);
                        return Ok(());
                    }
                    text = self.all_input().await;
                } else {
                    for f in &input {
                        match self.host.read_file(f) {
                            Ok(d) => text.extend_from_slice(&d),
                            Err(e) => {
                                let msg = format!("{name}: {f}: {}\n", e.text());
                                self.emit(err, msg.as_bytes(), files);
                                self.status = if name == "grep" { 2 } else { 1 };
                            }
                        }
                    }
                }
                let text = String::from_utf8_lossy(&text).into_owned();
                match name {
                    "grep" => {
                        let Some(pattern) = rest else {
                            self.emit(err, b"grep: missing pattern\n", files);
                            self.status = 2;
                            return Ok(());
                        };
                        let (pattern, fold) = if flags.contains('i') {
                            (pattern.to_lowercase(), true)
                        } else {
                            (pattern, false)
                        };
                        let invert = flags.contains('v');
                        let hits: Vec<&str> = text
                            .lines()
                            .filter(|l| {
                                let found = if fold {
                                    l.to_lowercase().contains(&pattern)
                                } else {
                                    l.contains(&pattern)
                                };
                                found != invert
                            })
                            .collect();
                        if self.status != 2 {
                            self.status = if hits.is_empty() { 1 } else { 0 };
                        }
                        if flags.contains('c') {
                            let line = format!("{}\n", hits.len());
                            self.emit(out, line.as_bytes(), files);
                        } else if !flags.contains('q') {
                            let body: String = hits.iter().map(|l| format!("{l}\n")).collect();
                            self.emit(out, body.as_bytes(), files);
                        }
                    }
                    "head" | "tail" => {
                        let n = count_flag(args).unwrap_or(10);
                        let lines: Vec<&str> = text.split_inclusive('\n').collect();
                        let pick = if name == "head" {
                            &lines[..n.min(lines.len())]
                        } else {
                            &lines[lines.len().saturating_sub(n)..]
                        };
                        let body: String = pick.concat();
                        self.emit(out, body.as_bytes(), files);
                    }
                    "wc" => {
                        let l = text.matches('\n').count();
                        let w = text.split_whitespace().count();
                        let c = text.len();
                        let shown: Vec<String> = match (flags.contains('l'), flags.contains('w'), flags.contains('c')) {
                            (false, false, false) => vec![l.to_string(), w.to_string(), c.to_string()],
                            (fl, fw, fc) => [(fl, l), (fw, w), (fc, c)]
                                .iter()
                                .filter(|(on, _)| *on)
                                .map(|(_, v)| v.to_string())
                                .collect(),
                        };
                        let line = format!("{}\n", shown.join(" "));
                        self.emit(out, line.as_bytes(), files);
                    }
                    _ => {
                        // tee: stdin to stdout and to every file.
                        for f in &operands {
                            if let Err(e) = self.host.write_file(self.now, f, text.as_bytes(), flags.contains('a')) {
                                let msg = format!("tee: {f}: {}\n", e.text());
                                self.emit(err, msg.as_bytes(), files);
                                self.status = 1;
                            }
                        }
                        self.emit(out, text.as_bytes(), files);
                    }
                }
            }
            "sha256sum" | "md5sum" => {
                let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-') || *a == "-").collect();
                let mut text = String::new();
                if paths.is_empty() || paths.iter().any(|p| *p == "-") {
                    // Hashed chunk by chunk as stdin arrives.
                    let mut h = Digest::new(name);
                    while let Some(chunk) = self.next_input().await {
                        h.update(&chunk);
                    }
                    text.push_str(&format!("{}  -\n", h.hex()));
                }
                for p in paths.into_iter().filter(|p| *p != "-") {
                    match self.host.read_file(p) {
                        Ok(data) => {
                            let mut h = Digest::new(name);
                            h.update(&data);
                            text.push_str(&format!("{}  {p}\n", h.hex()));
                        }
                        Err(e) => {
                            let msg = format!("{name}: {p}: {}\n", e.text());
                            self.emit(err, msg.as_bytes(), files);
                            self.status = 1;
                        }
                    }
                }
                self.emit(out, text.as_bytes(), files);
            }
            "stty" => match (args.first().map(String::as_str), self.host.term_size()) {
                (_, None) => {
                    self.emit(err, b"stty: standard input: Not a tty\n", files);
                    self.status = 1;
                }
                (Some("size"), Some((rows, cols))) => {
                    let line = format!("{rows} {cols}\n");
                    self.emit(out, line.as_bytes(), files);
                }
                // Mode changes (`stty raw -echo`…) are accepted and change nothing.
                _ => {}
            },
            "touch" => {
                for a in args.iter().filter(|a| !a.starts_with('-')) {
                    if let Err(e) = self.host.write_file(self.now, a, b"", true) {
                        let msg = format!("touch: {a}: {}\n", e.text());
                        self.emit(err, msg.as_bytes(), files);
                        self.status = 1;
                    }
                }
            }
            "rm" => {
                let flags: String = args.iter().filter(|a| a.starts_with('-')).map(|a| &a[1..]).collect();
                let (force, recursive) = (flags.contains('f'), flags.contains('r') || flags.contains('R'));
                for a in args.iter().filter(|a| !a.starts_with('-')) {
                    match self.host.remove(self.now, a, recursive) {
                        Ok(()) => {}
                        Err(FsError::NotFound) if force => {}
                        Err(e) => {
                            let msg = format!("rm: can't remove '{a}': {}\n", e.text());
                            self.emit(err, msg.as_bytes(), files);
                            self.status = 1;
                        }
                    }
                }
            }
            "ls" => {
                let show_hidden = args
                    .iter()
                    .any(|a| a.starts_with('-') && (a.contains('a') || a.contains('A')));
                let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
                let paths: Vec<&str> = if paths.is_empty() {
                    vec!["/"]
                } else {
                    paths.iter().map(|p| p.as_str()).collect()
                };
                let many = paths.len() > 1;
                for (i, p) in paths.iter().enumerate() {
                    match self.host.kind(p) {
                        None => {
                            let msg = format!("ls: {p}: No such file or directory\n");
                            self.emit(err, msg.as_bytes(), files);
                            self.status = 1;
                        }
                        Some(FileKind::File { .. }) => {
                            let line = format!("{p}\n");
                            self.emit(out, line.as_bytes(), files);
                        }
                        Some(FileKind::Dir) => {
                            let names = self.host.list_dir(p).unwrap_or_default();
                            let mut text = String::new();
                            if many {
                                text.push_str(&format!("{}{p}:\n", if i > 0 { "\n" } else { "" }));
                            }
                            for n in names.iter().filter(|n| show_hidden || !n.starts_with('.')) {
                                text.push_str(n);
                                text.push('\n');
                            }
                            self.emit(out, text.as_bytes(), files);
                        }
                    }
                }
            }
            "mkdir" => {
                for a in args.iter().filter(|a| !a.starts_with('-')) {
                    if let Err(e) = self.host.make_dir(self.now, a) {
                        let msg = format!("mkdir: can't create directory '{a}': {}\n", e.text());
                        self.emit(err, msg.as_bytes(), files);
                        self.status = 1;
                    }
                }
            }
            "test" | "[" => {
                let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
                if name == "[" {
                    if a.last() != Some(&"]") {
                        self.emit(err, b"[: missing ]\n", files);
                        self.status = 2;
                        return Ok(());
                    }
                    a.pop();
                }
                self.status = if self.test(&a) { 0 } else { 1 };
            }
            "env" | "printenv" => {
                if let (Some(v), "printenv") = (args.first(), name) {
                    match self.vars.get(v.as_str()) {
                        Some(val) => {
                            let line = format!("{val}\n");
                            self.emit(out, line.as_bytes(), files);
                        }
                        None => self.status = 1,
                    }
                } else if name == "env" && !args.is_empty() {
                    return self.unrecognized(&argv.join(" "), "env with a command");
                } else {
                    let text: String = self.vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                    self.emit(out, text.as_bytes(), files);
                }
            }
            "hostname" => {
                let line = format!("{}\n", self.var("HOSTNAME"));
                self.emit(out, line.as_bytes(), files);
            }
            "date" => {
                let line = format!("{}\n", self.host.date(self.now));
                self.emit(out, line.as_bytes(), files);
            }
            _ => return self.unrecognized(&argv.join(" "), "unknown command"),
        }
        Ok(())
    }

    /// `head -c N [FILE…]`: stdin (chunk by chunk as it arrives) or the files, `/dev/zero`
    /// included (generated in chunks, each handed to the host before the next is made).
    async fn head_bytes(
        &mut self,
        n: usize,
        paths: &[String],
        out: &Sink,
        err: &Sink,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) {
        let mut left = n;
        if paths.is_empty() {
            while left > 0 {
                let Some(chunk) = self.next_input().await else { break };
                let take = chunk.len().min(left);
                self.emit(out, &chunk[..take], files);
                left -= take;
            }
            return;
        }
        for p in paths {
            if left == 0 {
                break;
            }
            if p == "/dev/zero" {
                while left > 0 {
                    let take = left.min(ZEROS.len());
                    self.emit(out, &ZEROS[..take], files);
                    left -= take;
                    self.host.drain().await;
                }
                continue;
            }
            match self.host.read_file(p) {
                Ok(data) => {
                    let take = data.len().min(left);
                    self.emit(out, &data[..take], files);
                    left -= take;
                }
                Err(e) => {
                    let msg = format!("head: {p}: {}\n", e.text());
                    self.emit(err, msg.as_bytes(), files);
                    self.status = 1;
                }
            }
        }
    }

    async fn sleep(&mut self, d: Duration) {
        self.now += d;
        self.host.wait_until(self.now).await;
    }

    fn trap(&mut self, args: &[String]) {
        let Some((action, signals)) = args.split_first() else {
            return;
        };
        let term = signals
            .iter()
            .any(|s| matches!(s.to_ascii_uppercase().as_str(), "TERM" | "SIGTERM" | "15"));
        if !term {
            return;
        }
        let trap = match action.as_str() {
            "" => Trap::Ignore,
            "-" => Trap::Default,
            text => Trap::Handler(Arc::new(parse_or_unrecognized(text))),
        };
        self.host.set_trap(trap);
    }

    fn test(&mut self, a: &[&str]) -> bool {
        match a {
            [] => false,
            ["!", rest @ ..] => !self.test(rest),
            [s] => !s.is_empty(),
            ["-n", s] => !s.is_empty(),
            ["-z", s] => s.is_empty(),
            ["-e", p] => self.host.kind(p).is_some(),
            ["-f", p] => matches!(self.host.kind(p), Some(FileKind::File { .. })),
            ["-d", p] => matches!(self.host.kind(p), Some(FileKind::Dir)),
            ["-s", p] => matches!(self.host.kind(p), Some(FileKind::File { empty: false })),
            [x, "=" | "==", y] => x == y,
            [x, "!=", y] => x != y,
            [x, op @ ("-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge"), y] => {
                let (Ok(x), Ok(y)) = (x.parse::<i64>(), y.parse::<i64>()) else {
                    return false;
                };
                match *op {
                    "-eq" => x == y,
                    "-ne" => x != y,
                    "-lt" => x < y,
                    "-le" => x <= y,
                    "-gt" => x > y,
                    _ => x >= y,
                }
            }
            _ => false,
        }
    }
}

/// Evaluates a `$((…))` expression: integers, variables, `+ - * / %`, comparisons
/// (`< <= > >= == !=`, 1 or 0), unary minus and parentheses. `None` on a syntax error or
/// division by zero.
fn arith(expr: &str, var: &dyn Fn(&str) -> String) -> Option<i64> {
    #[derive(Clone, Debug, PartialEq)]
    enum T {
        Num(i64),
        Op(&'static str),
    }
    let mut toks = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            toks.push(T::Num(n.parse().ok()?));
        } else if c == '$' || c.is_ascii_alphabetic() || c == '_' {
            chars.next();
            let mut name = if c == '$' { String::new() } else { c.to_string() };
            while let Some(&d) = chars.peek().filter(|d| is_name_char(**d)) {
                name.push(d);
                chars.next();
            }
            toks.push(T::Num(var(&name).trim().parse().unwrap_or(0)));
        } else {
            chars.next();
            let two = chars.peek().map(|n| format!("{c}{n}"));
            let op = match two.as_deref() {
                Some(o @ ("<=" | ">=" | "==" | "!=")) => {
                    chars.next();
                    match o {
                        "<=" => "<=",
                        ">=" => ">=",
                        "==" => "==",
                        _ => "!=",
                    }
                }
                _ => match c {
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    '%' => "%",
                    '<' => "<",
                    '>' => ">",
                    '(' => "(",
                    ')' => ")",
                    _ => return None,
                },
            };
            toks.push(T::Op(op));
        }
    }
    struct P {
        toks: Vec<T>,
        pos: usize,
    }
    impl P {
        fn op(&mut self, ops: &[&'static str]) -> Option<&'static str> {
            match self.toks.get(self.pos) {
                Some(T::Op(o)) if ops.contains(o) => {
                    self.pos += 1;
                    Some(o)
                }
                _ => None,
            }
        }
        fn cmp(&mut self, depth: usize) -> Option<i64> {
            let mut v = self.add(depth)?;
            while let Some(o) = self.op(&["<", "<=", ">", ">=", "==", "!="]) {
                let r = self.add(depth)?;
                v = i64::from(match o {
                    "<" => v < r,
                    "<=" => v <= r,
                    ">" => v > r,
                    ">=" => v >= r,
                    "==" => v == r,
                    _ => v != r,
                });
            }
            Some(v)
        }
        fn add(&mut self, depth: usize) -> Option<i64> {
            let mut v = self.mul(depth)?;
            while let Some(o) = self.op(&["+", "-"]) {
                let r = self.mul(depth)?;
                v = if o == "+" { v.wrapping_add(r) } else { v.wrapping_sub(r) };
            }
            Some(v)
        }
        fn mul(&mut self, depth: usize) -> Option<i64> {
            let mut v = self.unary(depth)?;
            while let Some(o) = self.op(&["*", "/", "%"]) {
                let r = self.unary(depth)?;
                v = match o {
                    "*" => v.wrapping_mul(r),
                    "/" => v.checked_div(r)?,
                    _ => v.checked_rem(r)?,
                };
            }
            Some(v)
        }
        fn unary(&mut self, depth: usize) -> Option<i64> {
            if depth > MAX_NESTING {
                return None;
            }
            match self.op(&["-", "+", "("]) {
                Some("-") => self.unary(depth + 1).map(i64::wrapping_neg),
                Some("+") => self.unary(depth + 1),
                Some(_) => {
                    let v = self.cmp(depth + 1)?;
                    self.op(&[")"])?;
                    Some(v)
                }
                None => match self.toks.get(self.pos) {
                    Some(T::Num(n)) => {
                        self.pos += 1;
                        Some(*n)
                    }
                    _ => None,
                },
            }
        }
    }
    let mut p = P { toks, pos: 0 };
    let v = p.cmp(0)?;
    (p.pos == p.toks.len()).then_some(v)
}

/// Appends an expanded value to the fields being built: quoted, it joins the current field;
/// unquoted, whitespace separates fields (as sh's field splitting with the default IFS).
fn split_into(v: &str, quoted: bool, fields: &mut Vec<String>, cur: &mut String, have: &mut bool) {
    if quoted {
        cur.push_str(v);
        *have = true;
        return;
    }
    if v.starts_with(char::is_whitespace) && *have {
        fields.push(std::mem::take(cur));
        *have = false;
    }
    let mut pieces = v.split_whitespace().peekable();
    while let Some(piece) = pieces.next() {
        cur.push_str(piece);
        *have = true;
        if pieces.peek().is_some() {
            fields.push(std::mem::take(cur));
        }
    }
    if v.ends_with(char::is_whitespace) && *have && !v.trim().is_empty() {
        fields.push(std::mem::take(cur));
        *have = false;
    }
}

/// Single-letter flags (`-iv`) and operands; `-n N` of head/tail takes its value along.
fn split_flags(name: &str, args: &[String]) -> (String, Vec<String>) {
    let mut flags = String::new();
    let mut operands = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.len() > 1 && a.starts_with('-') && operands.is_empty() {
            if matches!(name, "head" | "tail") && (a == "-n" || a == "-c") {
                i += 1;
            } else if !a[1..].chars().all(|c| c.is_ascii_digit()) {
                flags.push_str(&a[1..]);
            }
        } else {
            operands.push(a.clone());
        }
        i += 1;
    }
    (flags, operands)
}

/// What `/dev/zero` reads as, one chunk at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// head's byte count: `-c N` or `-cN`.
fn byte_count_flag(args: &[String]) -> Option<usize> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-c" {
            return it.next().and_then(|n| n.parse().ok());
        }
        if let Some(n) = a.strip_prefix("-c") {
            return n.parse().ok();
        }
    }
    None
}

/// An incremental `sha256sum` / `md5sum`.
enum Digest {
    Sha256(ring::digest::Context),
    Md5(md5::Md5),
}

impl Digest {
    fn new(name: &str) -> Digest {
        if name == "md5sum" {
            Digest::Md5(<md5::Md5 as md5::Digest>::new())
        } else {
            Digest::Sha256(ring::digest::Context::new(&ring::digest::SHA256))
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Digest::Sha256(c) => c.update(data),
            Digest::Md5(m) => md5::Digest::update(m, data),
        }
    }

    fn hex(self) -> String {
        match self {
            Digest::Sha256(c) => hex::encode(c.finish().as_ref()),
            Digest::Md5(m) => hex::encode(md5::Digest::finalize(m)),
        }
    }
}

/// head/tail line count: `-n N`, `-nN` or `-N`.
fn count_flag(args: &[String]) -> Option<usize> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-n" {
            return it.next().and_then(|n| n.trim_start_matches('+').parse().ok());
        }
        if let Some(n) = a.strip_prefix("-n").or_else(|| a.strip_prefix('-')) {
            if let Ok(n) = n.parse() {
                return Some(n);
            }
        }
    }
    None
}

enum SleepArg {
    For(Duration),
    Infinity,
}

/// `sleep` operands: seconds (fractional allowed) with an optional s/m/h/d suffix, or `infinity`.
fn parse_sleep(a: &str) -> Option<SleepArg> {
    if a == "infinity" || a == "inf" {
        return Some(SleepArg::Infinity);
    }
    let (num, mult) = match a.chars().last()? {
        's' => (&a[..a.len() - 1], 1.0),
        'm' => (&a[..a.len() - 1], 60.0),
        'h' => (&a[..a.len() - 1], 3600.0),
        'd' => (&a[..a.len() - 1], 86400.0),
        _ => (a, 1.0),
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let secs = num.parse::<f64>().ok()? * mult;
    Duration::try_from_secs_f64(secs).ok().map(SleepArg::For)
}

/// `echo [-n] [-e] ARGS…` (busybox ash semantics: escapes only with -e).
fn echo(args: &[String]) -> String {
    let mut newline = true;
    let mut escapes = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| matches!(c, 'n' | 'e' | 'E')) {
            for c in a[1..].chars() {
                match c {
                    'n' => newline = false,
                    'e' => escapes = true,
                    _ => escapes = false,
                }
            }
            i += 1;
        } else {
            break;
        }
    }
    let mut text = args[i..].join(" ");
    if escapes {
        let (t, stop) = unescape(&text);
        text = t;
        if stop {
            return text;
        }
    }
    if newline {
        text.push('\n');
    }
    text
}

/// Backslash escapes; the bool is true when `\c` asked to stop output.
fn unescape(s: &str) -> (String, bool) {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('c') => return (out, true),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    (out, false)
}

/// `printf FORMAT ARGS…` with %s %d %b %c %% and backslash escapes; the format is reused while
/// arguments remain, as in sh.
fn printf(fmt: &str, args: &[String]) -> String {
    let (fmt, _) = unescape(fmt);
    let mut out = String::new();
    let mut idx = 0;
    loop {
        let mut consumed = false;
        let mut chars = fmt.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            // Skip flags/width: printf output alignment is not simulated.
            while let Some(&f) = chars.peek() {
                if f.is_ascii_digit() || matches!(f, '-' | '.' | '+' | ' ') {
                    chars.next();
                } else {
                    break;
                }
            }
            let arg = args.get(idx).map(String::as_str);
            match chars.next() {
                Some('%') => out.push('%'),
                Some('s') | Some('c') => {
                    out.push_str(arg.unwrap_or(""));
                    idx += 1;
                    consumed = true;
                }
                Some('b') => {
                    out.push_str(&unescape(arg.unwrap_or("")).0);
                    idx += 1;
                    consumed = true;
                }
                Some('d') | Some('i') | Some('u') => {
                    out.push_str(&arg.and_then(|a| a.parse::<i64>().ok()).unwrap_or(0).to_string());
                    idx += 1;
                    consumed = true;
                }
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            }
        }
        if !consumed || idx >= args.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A host that records everything and never really waits.
    #[derive(Default)]
    pub(crate) struct TestHost {
        pub out: Vec<(Duration, Stream, String)>,
        pub files: BTreeMap<String, Vec<u8>>,
        pub trap: Trap,
        pub waits: Vec<Duration>,
    }

    #[async_trait]
    impl Host for TestHost {
        async fn wait_until(&mut self, at: Duration) {
            self.waits.push(at);
        }
        fn output(&mut self, at: Duration, _seq: u64, stream: Stream, data: &[u8]) {
            self.out.push((at, stream, String::from_utf8_lossy(data).into_owned()));
        }
        fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
            self.files.get(path).cloned().ok_or(FsError::NotFound)
        }
        fn write_file(&mut self, _at: Duration, path: &str, data: &[u8], append: bool) -> Result<(), FsError> {
            if path.starts_with("/ro/") {
                return Err(FsError::ReadOnly);
            }
            let f = self.files.entry(path.to_string()).or_default();
            if !append {
                f.clear();
            }
            f.extend_from_slice(data);
            Ok(())
        }
        fn remove(&mut self, _at: Duration, path: &str, _recursive: bool) -> Result<(), FsError> {
            self.files.remove(path).map(|_| ()).ok_or(FsError::NotFound)
        }
        fn make_dir(&mut self, _at: Duration, _path: &str) -> Result<(), FsError> {
            Ok(())
        }
        fn kind(&mut self, path: &str) -> Option<FileKind> {
            if path == "/d" {
                return Some(FileKind::Dir);
            }
            self.files.get(path).map(|f| FileKind::File { empty: f.is_empty() })
        }
        fn list_dir(&mut self, path: &str) -> Result<Vec<String>, FsError> {
            let prefix = format!("{path}/");
            Ok(self
                .files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(str::to_string)
                .collect())
        }
        fn set_trap(&mut self, trap: Trap) {
            self.trap = trap;
        }
        fn date(&self, at: Duration) -> String {
            format!("T+{}", at.as_secs())
        }
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn run_with(node: &Node, mode: Mode, env: &[(&str, &str)]) -> (Outcome, TestHost) {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let mut i = Interp::new(TestHost::default(), env, mode, Duration::ZERO, 0);
        let out = futures::executor::block_on(i.run(node));
        (out, i.host)
    }

    fn run(script: &str) -> (Outcome, TestHost) {
        run_with(&program(&argv(&["sh", "-c", script])), Mode::Container, &[])
    }

    fn stdout(h: &TestHost) -> String {
        h.out
            .iter()
            .filter(|(_, s, _)| *s == Stream::Stdout)
            .map(|(_, _, t)| t.as_str())
            .collect()
    }

    fn exit(code: i32) -> Outcome {
        Outcome::Exit { code, oom: false }
    }

    #[test]
    fn parser_table() {
        // (script, parses?)
        let cases: &[(&str, bool)] = &[
            ("echo hi; sleep 5; exit 3", true),
            ("sleep 1 && echo ok || echo no", true),
            ("while true; do sleep 1; done", true),
            ("for i in 1 2 3; do echo $i; done", true),
            ("if [ -f /x ]; then echo y; elif true; then :; else echo n; fi", true),
            ("trap 'exit 0' TERM; sleep infinity", true),
            ("echo 'unterminated", false),
            ("cat /x | grep y", true),
            ("echo a |", false),
            ("echo $(date)", true),
            ("echo $(echo a", false),
            ("echo $(echo ')')", true),
            ("echo $((1 + 2)", false),
            ("(sleep 1)", false),
            ("while true; do sleep 1", false),
            ("&& echo", false),
            ("echo a &&", false),
            ("{ echo a; echo b; }", true),
            ("A=1 B=\"x y\"; echo $A", true),
            ("echo hi >&2; echo err 2>/dev/null 1>&2", true),
            (
                &format!("{}true{}", "if true; then ".repeat(60), "; fi".repeat(60)),
                true,
            ),
            (&format!("{}true{}", "{ ".repeat(100), "; }".repeat(100)), false),
        ];
        for (script, ok) in cases {
            assert_eq!(parse(script).is_ok(), *ok, "{script}: {:?}", parse(script));
        }
        assert!(matches!(program(&argv(&["sh", "-c", "a | b"])), Node::Pipeline(_)));
        assert_eq!(program(&[]), Node::ImageDefault);
        assert!(matches!(program(&argv(&["/bin/sh"])), Node::Unrecognized { .. }));
        assert!(matches!(program(&argv(&["/bin/bash", "-ec", "true"])), Node::Simple(_)));
    }

    #[test]
    fn behaviour_table() {
        // (script, outcome, stdout, total virtual time in ms)
        let cases: &[(&str, Outcome, &str, u64)] = &[
            ("echo hi; sleep 5; exit 3", exit(3), "hi\n", 5000),
            ("true", exit(0), "", 0),
            ("false", exit(1), "", 0),
            ("echo a; false; echo b", exit(0), "a\nb\n", 0),
            ("echo a; false", exit(1), "a\n", 0),
            ("false && echo never; echo after", exit(0), "after\n", 0),
            ("false || echo rescue", exit(0), "rescue\n", 0),
            ("exit 300", exit(44), "", 0),
            ("exit", exit(0), "", 0),
            ("false; exit", exit(1), "", 0),
            ("sleep 1.5; sleep 2m", exit(0), "", 121500),
            ("oom", Outcome::Exit { code: 137, oom: true }, "", 0),
            ("fail-after 7", exit(1), "", 7000),
            ("sleep infinity", Outcome::Forever, "", 0),
            ("pause", Outcome::Forever, "", 0),
            ("echo x; my-server --port 80; echo never", Outcome::Forever, "x\n", 0),
            (
                "for i in 1 2 3; do echo n$i; sleep 1; done",
                exit(0),
                "n1\nn2\nn3\n",
                3000,
            ),
            ("i=0; while [ $i != 3 ]; do echo $i; i=3; done", exit(0), "0\n", 0),
            ("printf 'a\\nb\\nc\\n' | grep -v b | tail -n 1", exit(0), "c\n", 0),
            ("echo hello | grep -q hell && echo found", exit(0), "found\n", 0),
            ("echo x | grep nope", exit(1), "", 0),
            ("printf '1\\n2\\n3\\n' | head -2 | wc -l", exit(0), "2\n", 0),
            ("echo DONE | tee /f >/dev/null; cat /f", exit(0), "DONE\n", 0),
            ("exit 4 | true; echo still", exit(0), "still\n", 0),
            ("echo a | cat; echo b", exit(0), "a\nb\n", 0),
            // Hashes and byte counts (coreutils formats); stdin is consumed by the first reader.
            (
                "echo hello | md5sum",
                exit(0),
                "b1946ac92492d2347c6235b4d2611184  -\n",
                0,
            ),
            (
                "printf abc | sha256sum",
                exit(0),
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -\n",
                0,
            ),
            ("printf abcdef | head -c 4; echo", exit(0), "abcd\n", 0),
            ("head -c 3 /dev/zero | wc -c", exit(0), "3\n", 0),
            ("printf abc | { cat; cat; }", exit(0), "abc", 0),
            ("cat; echo none", exit(0), "none\n", 0),
            ("stty size || echo no-tty", exit(0), "no-tty\n", 0),
            (
                "echo \"[$(echo a; echo b)]\" $(printf 'x y\\n\\n')",
                exit(0),
                "[a\nb] x y\n",
                0,
            ),
            ("n=$(echo 3); echo $((n * 2)) $(exit 5)$?", exit(0), "6 5\n", 0),
            ("for w in $(echo 1 2); do echo $w; done", exit(0), "1\n2\n", 0),
            ("echo $(echo $(echo deep))", exit(0), "deep\n", 0),
            ("echo \"node: $(uname -n)\"; exit 2", exit(2), "node: \n", 0),
            (
                "while true; do echo tick; done",
                Outcome::Forever,
                &"tick\n".repeat(100),
                0,
            ),
            ("echo -n DONE", exit(0), "DONE", 0),
            (
                "echo -e 'a\\tb'; printf '%s=%d\\n' x 4 y 5",
                exit(0),
                "a\tb\nx=4\ny=5\n",
                0,
            ),
            ("echo \"quoted  text\" 'single'", exit(0), "quoted  text single\n", 0),
            ("if false; then echo a; else echo b; fi", exit(0), "b\n", 0),
            ("exec sleep 2", exit(0), "", 2000),
            ("sh -c 'echo nested; exit 4'", exit(4), "nested\n", 0),
            ("sleep abc", exit(1), "", 0),
            ("echo $?; false; echo $?", exit(0), "0\n1\n", 0),
            (
                "i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo $i; sleep 1; done",
                exit(0),
                "1\n2\n3\n",
                3000,
            ),
            (
                "echo $(( (2+3)*4 % 7 )) $((10/0)) $((-$N + 1)) $((3 > 2))",
                exit(0),
                "6 0 1 1\n",
                0,
            ),
        ];
        for (script, outcome, out, secs) in cases {
            let (got, host) = run(script);
            assert_eq!(got, *outcome, "{script}");
            assert_eq!(stdout(&host), *out, "{script}");
            let last = host.waits.last().copied().unwrap_or_default();
            assert_eq!(last, Duration::from_millis(*secs), "{script}");
        }
    }

    #[test]
    fn outputs_carry_their_offsets_and_streams() {
        let (_, h) = run("echo a; sleep 2; echo b >&2; sleep 1; echo c 1>&2 2>/dev/null; echo d 2>&1 >/dev/null");
        let got: Vec<(u64, Stream, &str)> = h.out.iter().map(|(t, s, x)| (t.as_secs(), *s, x.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (0, Stream::Stdout, "a\n"),
                (2, Stream::Stderr, "b\n"),
                (3, Stream::Stderr, "c\n")
            ]
        );
    }

    #[test]
    fn unrecognized_is_noted_on_stderr_in_containers_and_succeeds_in_exec() {
        let node = program(&argv(&["nginx", "-g", "daemon off;"]));
        let (o, h) = run_with(&node, Mode::Container, &[]);
        assert_eq!(o, Outcome::Forever);
        assert_eq!(h.out.len(), 1);
        assert_eq!(h.out[0].1, Stream::Stderr);
        assert!(h.out[0].2.contains("treating it as long-running"), "{}", h.out[0].2);
        let (o, h) = run_with(&node, Mode::Exec, &[]);
        assert_eq!(o, exit(0));
        assert!(h.out.is_empty());
    }

    #[test]
    fn traps() {
        let (_, h) = run("trap '' TERM; sleep 1");
        assert_eq!(h.trap, Trap::Ignore);
        let (_, h) = run("trap \"\" SIGTERM");
        assert_eq!(h.trap, Trap::Ignore);
        let (_, h) = run("trap 'exit 7' TERM");
        assert!(matches!(&h.trap, Trap::Handler(n) if matches!(n.as_ref(), Node::Simple(_))));
        let (_, h) = run("trap 'exit 7' INT");
        assert_eq!(h.trap, Trap::Default);
        let (_, h) = run("trap '' TERM; trap - TERM");
        assert_eq!(h.trap, Trap::Default);
    }

    #[test]
    fn files_env_and_tests() {
        let (o, h) = run("echo -n OK > /dev/termination-log; echo more >> /log; echo more >> /log; cat /log; test -f /log && echo yes");
        assert_eq!(o, exit(0));
        assert_eq!(h.files["/dev/termination-log"], b"OK");
        assert_eq!(stdout(&h), "more\nmore\nyes\n");
        let (o, h) = run("touch /d/b /d/a /d/.hidden; ls /d; ls -a /d/a; ls /nope");
        assert_eq!(o, exit(1));
        assert_eq!(stdout(&h), "a\nb\n/d/a\n");
        let (o, h) = run("touch /tmp/healthy; rm /tmp/healthy; cat /tmp/healthy");
        assert_eq!(o, exit(1));
        assert!(h
            .out
            .iter()
            .any(|(_, s, t)| *s == Stream::Stderr && t.contains("can't open '/tmp/healthy'")));
        let (o, _) = run("echo x > /ro/file");
        assert_eq!(o, exit(1));
        let node = program(&argv(&["sh", "-c", "echo $FOO ${BAR}x; printenv FOO; env"]));
        let (_, h) = run_with(&node, Mode::Container, &[("FOO", "foo"), ("BAR", "bar")]);
        assert_eq!(stdout(&h), "foo barx\nfoo\nBAR=bar\nFOO=foo\n");
        let node = program(&argv(&["sh", "-c", "for w in $LIST; do echo [$w]; done"]));
        let (_, h) = run_with(&node, Mode::Container, &[("LIST", " a  b ")]);
        assert_eq!(stdout(&h), "[a]\n[b]\n");
    }

    #[test]
    fn random_scripts_never_panic() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "echo", " ", "'", "\"", "\\", "$", "${", "}", "$((", "))", "(", ")", ";", "&&", "||", "&", "|", ">", ">>",
            "2>&1", ">&", "<", "\n", "#", "if", "then", "else", "fi", "for", "in", "do", "done", "{", "exit", "trap",
            "''", "TERM", "sleep", "1", "x", "=", "A=", "[", "]", "-f", "é", "ü", "cat", "rm", "-rf", "/",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(1..12);
            let text: String = (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
            let node = parse_or_unrecognized(&text);
            // Loops could legitimately run forever against a host whose time is free.
            if !text.contains("while") && !text.contains("until") {
                let _ = run_with(&node, Mode::Exec, &[]);
                let _ = run_with(&node, Mode::Container, &[]);
            }
        }
    }

    #[test]
    fn plain_argv_is_one_command() {
        let (o, h) = run_with(&program(&argv(&["echo", "$HOME", "a b"])), Mode::Container, &[]);
        assert_eq!(o, exit(0));
        // No second expansion of kubelet-expanded args.
        assert_eq!(stdout(&h), "$HOME a b\n");
        let (o, _) = run_with(&program(&argv(&["/bin/sleep", "10"])), Mode::Container, &[]);
        assert_eq!(o, exit(0));
        let (o, _) = run_with(&program(&argv(&["/bin/false"])), Mode::Exec, &[]);
        assert_eq!(o, exit(1));
    }
}
