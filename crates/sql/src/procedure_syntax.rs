//! Parsing of VoltDB's procedure statements, which sqlparser does not know:
//!
//! * `CREATE PROCEDURE name [PARTITION ON TABLE t COLUMN c [PARAMETER n]]
//!   [ALLOW role, ...] AS <statement>`
//! * `CREATE PROCEDURE name [...] AS BEGIN <statement>; ...; END`
//! * `CREATE PROCEDURE [PARTITION ON ...] [ALLOW ...] FROM CLASS a.b.Name`
//!   (the procedure is named after the class's last component)
//! * `DROP PROCEDURE [IF EXISTS] name`
//! * `PARTITION PROCEDURE name ON TABLE t COLUMN c [PARAMETER n]`
//!
//! These work on the token stream the statement splitter produced, before
//! any of the rewrites the standard statements get: a procedure's body is
//! kept as text (each statement is parsed here to report syntax errors at
//! once, and planned later by the transaction layer).

use crate::parser::{parse_single, Statement};
use joule_common::{bail, err, Result};
use sqlparser::tokenizer::{Token, Word};

/// `PARTITION ON TABLE t COLUMN c [PARAMETER n]` as written.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionClause {
    /// `[db.]table`, upper-cased unless quoted.
    pub table: Vec<String>,
    pub column: String,
    pub parameter: Option<usize>,
}

/// The body of `CREATE PROCEDURE`.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcedureSource {
    Statements(Vec<String>),
    Class(String),
}

/// `CREATE PROCEDURE ...`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateProcedure {
    pub name: String,
    pub partition: Option<PartitionClause>,
    pub roles: Vec<String>,
    pub source: ProcedureSource,
}

/// Try the procedure statements; `None` if the tokens start none of them.
pub fn parse(tokens: &[Token]) -> Option<Result<Statement>> {
    let mut c = Cursor { tokens, pos: 0 };
    if c.words(&["CREATE", "PROCEDURE"]) {
        Some(create(&mut c))
    } else if c.words(&["DROP", "PROCEDURE"]) {
        Some((|| {
            let if_exists = c.words(&["IF", "EXISTS"]);
            let name = c.name()?;
            c.end()?;
            Ok(Statement::DropProcedure { name, if_exists })
        })())
    } else if c.words(&["PARTITION", "PROCEDURE"]) {
        Some((|| {
            let name = c.name()?;
            c.expect("ON")?;
            let clause = partition_clause(&mut c)?;
            c.end()?;
            Ok(Statement::PartitionProcedure { name, partition: clause })
        })())
    } else {
        None
    }
}

fn create(c: &mut Cursor) -> Result<Statement> {
    let name = match c.peek_word() {
        Some(w) if ["PARTITION", "ALLOW", "FROM", "AS"].iter().any(|k| w.eq_ignore_ascii_case(k)) => None,
        _ => Some(c.name()?),
    };
    let mut partition = None;
    let mut roles = Vec::new();
    loop {
        if c.word("PARTITION") {
            c.expect("ON")?;
            partition = Some(partition_clause(c)?);
        } else if c.word("ALLOW") {
            loop {
                roles.push(c.ident()?);
                if !c.punct(&Token::Comma) {
                    break;
                }
            }
        } else {
            break;
        }
    }
    if c.words(&["FROM", "CLASS"]) {
        let class = c.name()?;
        c.end()?;
        let name = name.unwrap_or_else(|| class.rsplit('.').next().unwrap_or(&class).to_string());
        return Ok(Statement::CreateProcedure(CreateProcedure {
            name,
            partition,
            roles,
            source: ProcedureSource::Class(class),
        }));
    }
    let Some(name) = name else {
        bail!(SyntaxError, "syntax error: CREATE PROCEDURE needs a name before AS");
    };
    c.expect("AS")?;
    let statements = if c.word("BEGIN") {
        let body = c.rest();
        let last = body.iter().rposition(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon));
        let Some(last) = last.filter(|&i| is_word(&body[i], "END")) else {
            bail!(SyntaxError, "syntax error: CREATE PROCEDURE ... AS BEGIN must end with END");
        };
        body[..last].split(|t| *t == Token::SemiColon).map(text).filter(|s| !s.is_empty()).collect::<Vec<_>>()
    } else {
        vec![text(c.rest())]
    };
    if statements.is_empty() || statements.iter().any(|s| s.is_empty()) {
        bail!(SyntaxError, "syntax error: procedure {name} has no statement");
    }
    for s in &statements {
        parse_single(s).map_err(|e| err!(SyntaxError, "in procedure {name}: {}", e.message()))?;
    }
    Ok(Statement::CreateProcedure(CreateProcedure {
        name,
        partition,
        roles,
        source: ProcedureSource::Statements(statements),
    }))
}

fn partition_clause(c: &mut Cursor) -> Result<PartitionClause> {
    c.expect("TABLE")?;
    let mut table = vec![c.ident()?];
    while c.punct(&Token::Period) {
        table.push(c.ident()?);
    }
    c.expect("COLUMN")?;
    let column = c.ident()?;
    let parameter = if c.word("PARAMETER") { Some(c.number()?) } else { None };
    Ok(PartitionClause { table, column, parameter })
}

fn text(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect::<String>().trim().to_string()
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(w))
}

/// A cursor over tokens that skips whitespace.
struct Cursor<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.tokens.get(self.pos), Some(Token::Whitespace(_))) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        self.skip_ws();
        self.tokens.get(self.pos)
    }

    fn peek_word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.clone()),
            _ => None,
        }
    }

    fn word(&mut self, w: &str) -> bool {
        if self.peek().is_some_and(|t| is_word(t, w)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consume all of `ws` in sequence, or nothing.
    fn words(&mut self, ws: &[&str]) -> bool {
        let start = self.pos;
        if ws.iter().all(|w| self.word(w)) {
            true
        } else {
            self.pos = start;
            false
        }
    }

    fn expect(&mut self, w: &str) -> Result<()> {
        if self.word(w) {
            Ok(())
        } else {
            bail!(SyntaxError, "syntax error: expected {w}, found {}", self.found())
        }
    }

    fn punct(&mut self, p: &Token) -> bool {
        if self.peek() == Some(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn found(&mut self) -> String {
        self.peek().map_or_else(|| "end of statement".to_string(), |t| t.to_string())
    }

    /// An identifier: upper-cased unless quoted.
    fn ident(&mut self) -> Result<String> {
        match self.peek().cloned() {
            Some(Token::Word(w)) => {
                self.pos += 1;
                Ok(if w.quote_style.is_some() { w.value } else { w.value.to_uppercase() })
            }
            _ => bail!(SyntaxError, "syntax error: expected a name, found {}", self.found()),
        }
    }

    /// A procedure or class name as written (case kept), dots allowed.
    fn name(&mut self) -> Result<String> {
        let mut out = String::new();
        loop {
            match self.peek().cloned() {
                Some(Token::Word(w)) => {
                    self.pos += 1;
                    out.push_str(&w.value);
                }
                _ => bail!(SyntaxError, "syntax error: expected a name, found {}", self.found()),
            }
            if !self.punct(&Token::Period) {
                return Ok(out);
            }
            out.push('.');
        }
    }

    fn number(&mut self) -> Result<usize> {
        match self.peek().cloned() {
            Some(Token::Number(n, _)) => {
                self.pos += 1;
                n.parse().map_err(|_| err!(SyntaxError, "syntax error: {n} is not a parameter index"))
            }
            _ => bail!(SyntaxError, "syntax error: expected a number, found {}", self.found()),
        }
    }

    fn rest(&mut self) -> &[Token] {
        self.skip_ws();
        &self.tokens[self.pos..]
    }

    fn end(&mut self) -> Result<()> {
        self.punct(&Token::SemiColon);
        match self.peek() {
            None => Ok(()),
            Some(_) => bail!(SyntaxError, "syntax error: unexpected {} after the end of the statement", self.found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parser::{parse, Statement};

    fn create(sql: &str) -> super::CreateProcedure {
        match parse(sql).unwrap().remove(0).statement {
            Statement::CreateProcedure(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_statement() {
        let c = create("CREATE PROCEDURE GetVotes PARTITION ON TABLE votes COLUMN phone_number PARAMETER 1 AS SELECT * FROM votes WHERE x = ? AND phone_number = ?;");
        assert_eq!(c.name, "GetVotes");
        let p = c.partition.unwrap();
        assert_eq!((p.table, p.column.as_str(), p.parameter), (vec!["VOTES".to_string()], "PHONE_NUMBER", Some(1)));
        assert_eq!(
            c.source,
            super::ProcedureSource::Statements(vec!["SELECT * FROM votes WHERE x = ? AND phone_number = ?".into()])
        );
    }

    #[test]
    fn begin_end_block_survives_splitting() {
        let all = parse("CREATE PROCEDURE p AS BEGIN INSERT INTO t VALUES (?); SELECT CASE WHEN a = 1 THEN 2 END FROM t; END; SELECT 1").unwrap();
        assert_eq!(all.len(), 2);
        let Statement::CreateProcedure(c) = &all[0].statement else { panic!() };
        let super::ProcedureSource::Statements(s) = &c.source else { panic!() };
        assert_eq!(s.len(), 2);
        assert!(s[1].contains("CASE WHEN"));
    }

    #[test]
    fn from_class_and_drop() {
        let c = create(
            "CREATE PROCEDURE PARTITION ON TABLE votes COLUMN phone_number ALLOW user, admin FROM CLASS voter.Vote",
        );
        assert_eq!(c.name, "Vote");
        assert_eq!(c.roles, vec!["USER", "ADMIN"]);
        assert_eq!(c.source, super::ProcedureSource::Class("voter.Vote".into()));
        let d = parse("DROP PROCEDURE IF EXISTS Vote").unwrap();
        assert!(matches!(&d[0].statement, Statement::DropProcedure { name, if_exists: true } if name == "Vote"));
        let p = parse("PARTITION PROCEDURE Vote ON TABLE votes COLUMN phone_number PARAMETER 0").unwrap();
        assert!(matches!(&p[0].statement, Statement::PartitionProcedure { .. }));
    }

    #[test]
    fn errors() {
        for bad in [
            "CREATE PROCEDURE AS SELECT 1",
            "CREATE PROCEDURE p AS",
            "CREATE PROCEDURE p AS BEGIN SELECT 1;",
            "CREATE PROCEDURE p AS SELEC 1",
            "CREATE PROCEDURE p PARTITION ON TABLE t AS SELECT 1",
            "CREATE PROCEDURE p PARTITION ON TABLE t COLUMN c PARAMETER x AS SELECT 1",
            "DROP PROCEDURE",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code(), joule_common::ErrorCode::SyntaxError, "{bad}");
        }
    }
}
