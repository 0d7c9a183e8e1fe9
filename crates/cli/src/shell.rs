//! `joule sql`: an interactive SQL shell compatible with VoltDB's `sqlcmd`.
//!
//! It connects to one or more servers with the Rust client and reads
//! commands from `--query`, from a terminal (with line editing and
//! history), or from standard input when that is not a terminal. A SQL
//! statement ends with `;` and may span lines (a procedure's
//! `BEGIN ... END` block is kept whole); a directive is one line:
//!
//! * `exec proc [arg ...]` — call a procedure (arguments separated by
//!   spaces or commas; `'quoted strings'`, numbers, `NULL`)
//! * `explain sql`, `explainproc name`
//! * `show tables`, `show procedures`, `describe table`
//! * `file path` — run a script file
//! * `help`, `quit` / `exit`
//!
//! Results print as aligned columns (`fixed`), `csv` or `tab`, followed by
//! `(Returned N rows in S.SSs)` unless `--output-skip-metadata`.

use joule_client::{BlockingClient, Options, Response};
use joule_common::Value;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Instant;

/// Result output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Fixed,
    Csv,
    Tab,
}

/// How the shell was asked to run.
pub struct ShellOptions {
    pub servers: Vec<String>,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub query: Option<String>,
    pub format: Format,
    pub skip_metadata: bool,
    pub stop_on_error: bool,
}

struct Shell {
    client: BlockingClient,
    format: Format,
    skip_metadata: bool,
    stop_on_error: bool,
    failed: bool,
    /// Unfinished SQL text, waiting for its `;`.
    pending: String,
}

/// What one command asked the shell to do next.
enum Flow {
    Continue,
    Stop,
}

pub fn run(opts: ShellOptions) -> ExitCode {
    let addresses: Vec<String> = opts
        .servers
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| if s.contains(':') { s.to_string() } else { format!("{s}:{}", opts.port) })
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let options = Options { user: opts.user, password: opts.password, ..Default::default() };
    let client = match BlockingClient::connect(&refs, options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to {}: {e}", addresses.join(", "));
            return ExitCode::FAILURE;
        }
    };
    let mut shell = Shell {
        client,
        format: opts.format,
        skip_metadata: opts.skip_metadata,
        stop_on_error: opts.stop_on_error,
        failed: false,
        pending: String::new(),
    };
    if let Some(q) = opts.query {
        shell.input(&q);
        shell.finish();
    } else if std::io::stdin().is_terminal() {
        shell.interactive();
    } else {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("error: cannot read standard input: {e}");
            return ExitCode::FAILURE;
        }
        shell.input(&text);
        shell.finish();
    }
    if shell.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

const DIRECTIVES: &[&str] =
    &["exec", "execute", "explain", "explainproc", "show", "describe", "file", "help", "quit", "exit"];

impl Shell {
    fn interactive(&mut self) {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: cannot start line editing: {e}");
                self.failed = true;
                return;
            }
        };
        let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".joule_sql_history"));
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        println!("JouleDB SQL shell. Statements end with ';'. Type help for directives, quit to leave.");
        loop {
            let prompt = if self.pending.is_empty() { "1> " } else { "2> " };
            match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Flow::Stop = self.line(&line) {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => self.pending.clear(),
                Err(_) => break,
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
    }

    /// Run a whole script.
    fn input(&mut self, text: &str) {
        for line in text.lines() {
            if let Flow::Stop = self.line(line) {
                return;
            }
        }
    }

    /// Run what is left unterminated at the end of input.
    fn finish(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        if !rest.trim().is_empty() {
            self.sql(&rest);
        }
    }

    fn line(&mut self, line: &str) -> Flow {
        let trimmed = line.trim();
        if self.pending.trim().is_empty() {
            let first = trimmed.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            let first = first.trim_end_matches(';');
            // `explain` followed by SQL spanning lines is still a directive
            // of one line, as in sqlcmd.
            if DIRECTIVES.contains(&first) {
                return self.directive(trimmed.trim_end_matches(';').trim());
            }
            if trimmed.is_empty() || trimmed.starts_with("--") {
                return Flow::Continue;
            }
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        if trimmed.ends_with(';') {
            // Complete statements run now; an open BEGIN ... END block waits.
            if let Ok(statements) = joule_sql::parser::split(&self.pending) {
                let complete = !ends_inside_block(&self.pending);
                if complete {
                    self.pending.clear();
                    for s in statements {
                        if let Flow::Stop = self.sql(&s) {
                            return Flow::Stop;
                        }
                    }
                }
            }
        }
        Flow::Continue
    }

    fn sql(&mut self, sql: &str) -> Flow {
        let start = Instant::now();
        let r = self.client.execute(sql, vec![]);
        self.show(r, start)
    }

    fn directive(&mut self, text: &str) -> Flow {
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let rest = rest.trim();
        let start = Instant::now();
        match word.to_ascii_lowercase().as_str() {
            "quit" | "exit" => Flow::Stop,
            "help" => {
                println!(
                    "SQL statements end with ';'. Directives: exec <procedure> [args], explain <sql>, \
                     explainproc <procedure>, show tables, show procedures, describe <table>, file <path>, quit"
                );
                Flow::Continue
            }
            "exec" | "execute" => {
                let mut parts = split_args(rest);
                if parts.is_empty() {
                    return self.fail("exec needs a procedure name");
                }
                let name = match parts.remove(0) {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                let r = self.client.call(&name, parts);
                self.show(r, start)
            }
            "explain" => {
                let r = self.client.call("@Explain", vec![Value::String(rest.to_string())]);
                self.show(r, start)
            }
            "explainproc" => {
                let r = self.client.call("@ExplainProc", vec![Value::String(rest.to_string())]);
                self.show(r, start)
            }
            "show" => {
                let selector = match rest.to_ascii_lowercase().as_str() {
                    "tables" => "TABLES",
                    "procedures" | "procs" => "PROCEDURES",
                    other => return self.fail(&format!("show takes tables or procedures, not {other}")),
                };
                match self.client.call("@SystemCatalog", vec![Value::String(selector.into())]) {
                    Ok(r) => {
                        let name_col = 2;
                        let kind_col = if selector == "TABLES" { Some(3) } else { None };
                        for row in r.tables.first().map(|t| t.rows.as_slice()).unwrap_or_default() {
                            match kind_col {
                                Some(k) => println!("{} ({})", plain(&row[name_col]), plain(&row[k])),
                                None => println!("{}", plain(&row[name_col])),
                            }
                        }
                        Flow::Continue
                    }
                    Err(e) => self.fail(&e.to_string()),
                }
            }
            "describe" => {
                let table = rest.to_ascii_uppercase();
                match self.client.call("@SystemCatalog", vec![Value::String("COLUMNS".into())]) {
                    Ok(r) => {
                        let rows: Vec<_> = r
                            .tables
                            .first()
                            .map(|t| t.rows.iter().filter(|row| plain(&row[2]) == table).collect())
                            .unwrap_or_default();
                        if rows.is_empty() {
                            return self.fail(&format!("no table {table}"));
                        }
                        for row in rows {
                            println!("{:<24} {:<10} {}", plain(&row[3]), plain(&row[5]), plain(&row[17]));
                        }
                        Flow::Continue
                    }
                    Err(e) => self.fail(&e.to_string()),
                }
            }
            "file" => match std::fs::read_to_string(rest) {
                Ok(text) => {
                    self.input(&text);
                    self.finish();
                    Flow::Continue
                }
                Err(e) => self.fail(&format!("cannot read {rest}: {e}")),
            },
            other => self.fail(&format!("unknown directive {other}")),
        }
    }

    fn fail(&mut self, message: &str) -> Flow {
        eprintln!("{message}");
        self.failed = true;
        if self.stop_on_error {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn show(&mut self, r: joule_common::Result<Response>, start: Instant) -> Flow {
        match r {
            Ok(resp) => {
                let mut out = std::io::stdout().lock();
                for t in &resp.tables {
                    let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
                    let rows: Vec<Vec<String>> = t.rows.iter().map(|r| r.iter().map(plain).collect()).collect();
                    match self.format {
                        Format::Fixed => fixed(&mut out, &names, &rows, &t.columns),
                        Format::Csv => delimited(&mut out, &names, &rows, ",", self.skip_metadata),
                        Format::Tab => delimited(&mut out, &names, &rows, "\t", self.skip_metadata),
                    }
                    if !self.skip_metadata {
                        let _ = writeln!(
                            out,
                            "\n(Returned {} rows in {:.2}s)",
                            t.rows.len(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
                Flow::Continue
            }
            Err(e) => self.fail(&e.to_string()),
        }
    }
}

/// Whether SQL text stops inside a `CREATE PROCEDURE ... AS BEGIN` block.
fn ends_inside_block(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> =
        upper.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
    let mut depth = 0i32;
    let mut prev = "";
    for w in words {
        match w {
            "BEGIN" if prev == "AS" => depth += 1,
            "CASE" if depth > 0 => depth += 1,
            "END" if depth > 0 => depth -= 1,
            _ => {}
        }
        prev = w;
    }
    depth > 0
}

/// Print every table of `tables` in the fixed format.
pub(crate) fn print_fixed(tables: &[joule_wire::VoltTable]) {
    let mut out = std::io::stdout().lock();
    for t in tables {
        let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
        let rows: Vec<Vec<String>> = t.rows.iter().map(|r| r.iter().map(plain).collect()).collect();
        fixed(&mut out, &names, &rows, &t.columns);
        let _ = writeln!(out);
    }
}

/// A value as the shell prints it (NULL for NULL, strings unquoted).
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn fixed(out: &mut impl Write, names: &[&str], rows: &[Vec<String>], columns: &[(String, joule_wire::VoltType)]) {
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| rows.iter().map(|r| r[i].chars().count()).chain([n.chars().count()]).max().unwrap_or(0))
        .collect();
    let numeric: Vec<bool> = columns
        .iter()
        .map(|(_, t)| {
            use joule_wire::VoltType::*;
            matches!(t, TinyInt | SmallInt | Integer | BigInt | Float | Decimal)
        })
        .collect();
    let line = |cells: Vec<String>| cells.join(" ").trim_end().to_string();
    let _ = writeln!(out, "{}", line(names.iter().zip(&widths).map(|(n, w)| format!("{n:<w$}")).collect()));
    let _ = writeln!(out, "{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        let cells = r
            .iter()
            .zip(&widths)
            .zip(&numeric)
            .map(|((v, w), num)| if *num { format!("{v:>w$}") } else { format!("{v:<w$}") })
            .collect();
        let _ = writeln!(out, "{}", line(cells));
    }
}

fn delimited(out: &mut impl Write, names: &[&str], rows: &[Vec<String>], sep: &str, skip_header: bool) {
    let quote = |s: &str| {
        if sep == "," && (s.contains(',') || s.contains('"') || s.contains('\n')) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    if !skip_header {
        let _ = writeln!(out, "{}", names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(sep));
    }
    for r in rows {
        let _ = writeln!(out, "{}", r.iter().map(|v| quote(v)).collect::<Vec<_>>().join(sep));
    }
}

/// `exec` arguments: quoted strings, numbers, NULL; spaces or commas apart.
fn split_args(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
            continue;
        }
        if c == '\'' {
            chars.next();
            let mut s = String::new();
            while let Some(ch) = chars.next() {
                if ch == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        s.push('\'');
                        continue;
                    }
                    break;
                }
                s.push(ch);
            }
            out.push(Value::String(s));
            continue;
        }
        let mut word = String::new();
        while let Some(&ch) = chars.peek() {
            if ch.is_whitespace() || ch == ',' {
                break;
            }
            word.push(ch);
            chars.next();
        }
        out.push(if word.eq_ignore_ascii_case("null") {
            Value::Null
        } else if let Ok(i) = word.parse::<i64>() {
            Value::Integer(i)
        } else if let Ok(f) = word.parse::<f64>() {
            Value::Float(f)
        } else {
            Value::String(word)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments() {
        assert_eq!(
            split_args("Vote 5551234, 'it''s', -2.5 NULL x"),
            vec![
                Value::String("Vote".into()),
                Value::Integer(5551234),
                Value::String("it's".into()),
                Value::Float(-2.5),
                Value::Null,
                Value::String("x".into())
            ]
        );
    }

    #[test]
    fn procedure_blocks_wait_for_their_end() {
        assert!(ends_inside_block("CREATE PROCEDURE p AS BEGIN SELECT 1;"));
        assert!(!ends_inside_block("CREATE PROCEDURE p AS BEGIN SELECT CASE WHEN 1 THEN 2 END; END;"));
        assert!(!ends_inside_block("SELECT 1;"));
    }
}
