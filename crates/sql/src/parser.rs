//! The VoltDB-dialect parser: `sqlparser` plus the statements it does not know.
//!
//! `sqlparser` parses standard SQL into its AST; VoltDB adds statements and
//! clauses it has never heard of. This wrapper drives `sqlparser`'s parser one
//! statement at a time and, at each statement start, first tries JouleDB's own
//! forms:
//!
//! * `PARTITION TABLE t ON COLUMN c [USING RANGE (b1, b2, ...) [ON PARTITIONS (p0, p1, ...)]]`
//! * `UPSERT INTO ...` (parsed as an INSERT and flagged)
//! * `DROP DATABASE [IF EXISTS] name`
//! * `VARCHAR(n BYTES)` (rewritten to sqlparser's `OCTETS` unit)
//! * `ASSUMEUNIQUE` (VoltDB's partition-local uniqueness; accepted as UNIQUE
//!   with the flag kept)
//! * `CREATE PROCEDURE`, `DROP PROCEDURE`, `PARTITION PROCEDURE` (in
//!   `crate::procedure_syntax`); the splitter keeps a procedure's
//!   `AS BEGIN ...; ...; END` block together as one statement
//!
//! The result is the project's own [`Statement`] enum. Only the binder and
//! planner (this crate) look inside the standard statements' sqlparser types.
//! Every parse error becomes a `SyntaxError` with sqlparser's message and
//! position; no input, however malformed, panics (property-tested below).

use crate::procedure_syntax::{self, CreateProcedure, PartitionClause};
use joule_common::{err, Error, Result};
use sqlparser::ast;
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer, Word};

/// One parsed statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// A statement in sqlparser's AST.
    Standard(Box<ast::Statement>),
    /// `UPSERT INTO ...`: an INSERT that replaces rows with the same primary key.
    Upsert(Box<ast::Statement>),
    /// `PARTITION TABLE t ON COLUMN c [USING RANGE (b1, ..., bn) [ON
    /// PARTITIONS (p0, ..., pn)]]`: hashed, or placed by value ranges with
    /// these boundaries (on these partitions).
    PartitionTable {
        table: ast::ObjectName,
        column: ast::Ident,
        ranges: Option<Vec<ast::Expr>>,
        owners: Option<Vec<ast::Expr>>,
    },
    /// `DROP DATABASE [IF EXISTS] name`.
    DropDatabase { name: ast::Ident, if_exists: bool },
    /// `CREATE DATABASE [IF NOT EXISTS] name`.
    CreateDatabase { name: ast::Ident, if_not_exists: bool },
    /// `CREATE PROCEDURE ...` (see `crate::procedure_syntax`).
    CreateProcedure(CreateProcedure),
    /// `DROP PROCEDURE [IF EXISTS] name`.
    DropProcedure { name: String, if_exists: bool },
    /// `PARTITION PROCEDURE name ON TABLE t COLUMN c [PARAMETER n]`.
    PartitionProcedure { name: String, partition: PartitionClause },
    /// `SWAP TABLE a WITH b`: exchange the rows of two alike tables
    /// (what `@SwapTables` runs).
    SwapTables { a: ast::ObjectName, b: ast::ObjectName },
}

/// Indexes (in order of appearance among UNIQUE constraints) that were
/// written ASSUMEUNIQUE, per statement.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// The n-th UNIQUE constraint (counting in source order) was ASSUMEUNIQUE.
    pub assume_unique: Vec<usize>,
    /// The statement's source text.
    pub sql: String,
}

impl ParsedStatement {
    /// Whether this statement changes the schema (DDL, procedures,
    /// databases) rather than reading or writing data.
    pub fn is_schema_change(&self) -> bool {
        match &self.statement {
            Statement::Standard(s) => !matches!(
                s.as_ref(),
                ast::Statement::Query(_)
                    | ast::Statement::Insert(_)
                    | ast::Statement::Update(_)
                    | ast::Statement::Delete(_)
                    | ast::Statement::Truncate(_)
                    | ast::Statement::Use(_)
                    | ast::Statement::Explain { .. }
            ),
            Statement::Upsert(_) => false,
            _ => true,
        }
    }
}

fn syntax(e: ParserError) -> Error {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".to_string(),
    };
    err!(SyntaxError, "syntax error: {msg}")
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(w))
}

/// Parse a script of `;`-separated statements.
pub fn parse(sql: &str) -> Result<Vec<ParsedStatement>> {
    split_tokens(sql)?.into_iter().map(|(tokens, text)| parse_one(tokens, text)).collect()
}

/// Split a script into its statements' texts without parsing them (only
/// tokenizing), so that one bad statement does not hide the others.
pub fn split(sql: &str) -> Result<Vec<String>> {
    Ok(split_tokens(sql)?.into_iter().map(|(_, text)| text).collect())
}

fn split_tokens(sql: &str) -> Result<Vec<(Vec<Token>, String)>> {
    let dialect = GenericDialect {};
    let tokens =
        Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| err!(SyntaxError, "syntax error: {e}"))?;
    // Split into statements at top-level semicolons, keeping source text.
    let mut out = Vec::new();
    let mut start = 0;
    let mut depth = 0i32;
    // Inside `CREATE PROCEDURE ... AS BEGIN`: semicolons separate the
    // body's statements until the END that matches no CASE.
    let mut block = false;
    let mut case_depth = 0usize;
    for i in 0..=tokens.len() {
        let end = i == tokens.len();
        if !end {
            let t = &tokens[i].token;
            match t {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ if block && is_word(t, "CASE") => case_depth += 1,
                _ if block && is_word(t, "END") => {
                    if case_depth == 0 {
                        block = false;
                    } else {
                        case_depth -= 1;
                    }
                }
                _ if !block && depth == 0 && is_word(t, "BEGIN") => {
                    let words: Vec<&Token> = tokens[start..i]
                        .iter()
                        .map(|t| &t.token)
                        .filter(|t| !matches!(t, Token::Whitespace(_)))
                        .collect();
                    if words.len() >= 3
                        && is_word(words[0], "CREATE")
                        && is_word(words[1], "PROCEDURE")
                        && words.last().is_some_and(|w| is_word(w, "AS"))
                    {
                        block = true;
                        case_depth = 0;
                    }
                }
                _ => {}
            }
        }
        if end || (tokens[i].token == Token::SemiColon && depth <= 0 && !block) {
            let slice: Vec<Token> = tokens[start..i].iter().map(|t| t.token.clone()).collect();
            if slice.iter().any(|t| !matches!(t, Token::Whitespace(_))) {
                let text = source_text(sql, &tokens[start..i]);
                out.push((slice, text));
            }
            start = i + 1;
            depth = 0;
        }
    }
    Ok(out)
}

fn source_text(sql: &str, toks: &[sqlparser::tokenizer::TokenWithSpan]) -> String {
    let s: String = toks.iter().map(|t| t.token.to_string()).collect();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        sql.trim().to_string()
    } else {
        trimmed.to_string()
    }
}

/// Parse exactly one statement (a trailing `;` is allowed).
pub fn parse_single(sql: &str) -> Result<ParsedStatement> {
    let mut all = parse(sql)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(err!(SyntaxError, "syntax error: empty statement")),
        n => Err(err!(SyntaxError, "expected one statement, found {n}")),
    }
}

fn parse_one(mut tokens: Vec<Token>, sql: String) -> Result<ParsedStatement> {
    if let Some(statement) = procedure_syntax::parse(&tokens) {
        return Ok(ParsedStatement { statement: statement?, assume_unique: Vec::new(), sql });
    }
    // Rewrites at the token level for VoltDB spellings sqlparser lacks.
    let mut assume_unique = Vec::new();
    let mut unique_seen = 0;
    let mut upsert = false;
    let first = tokens.iter().position(|t| !matches!(t, Token::Whitespace(_)));
    for i in 0..tokens.len() {
        if is_word(&tokens[i], "BYTES") && i > 0 {
            let prev = tokens[..i].iter().rev().find(|t| !matches!(t, Token::Whitespace(_)));
            if matches!(prev, Some(Token::Number(..))) {
                tokens[i] = Token::make_keyword("OCTETS");
            }
        } else if is_word(&tokens[i], "ASSUMEUNIQUE") {
            assume_unique.push(unique_seen);
            unique_seen += 1;
            tokens[i] = Token::make_keyword("UNIQUE");
        } else if is_word(&tokens[i], "UNIQUE") {
            unique_seen += 1;
        } else if Some(i) == first && is_word(&tokens[i], "UPSERT") {
            upsert = true;
            tokens[i] = Token::make_keyword("INSERT");
        }
    }
    let tokens = rewrite_in_lists(tokens);
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).with_tokens(tokens);
    let statement = if parser.parse_keywords(&[Keyword::PARTITION, Keyword::TABLE]) {
        let table = parser.parse_object_name(false).map_err(syntax)?;
        parser.expect_keyword(Keyword::ON).map_err(syntax)?;
        parser.expect_keyword(Keyword::COLUMN).map_err(syntax)?;
        let column = parser.parse_identifier().map_err(syntax)?;
        let list = |parser: &mut Parser| -> Result<Vec<ast::Expr>> {
            parser.expect_token(&Token::LParen).map_err(syntax)?;
            let items = parser.parse_comma_separated(Parser::parse_expr).map_err(syntax)?;
            parser.expect_token(&Token::RParen).map_err(syntax)?;
            Ok(items)
        };
        let ranges =
            if parser.parse_keywords(&[Keyword::USING, Keyword::RANGE]) { Some(list(&mut parser)?) } else { None };
        let owners = if ranges.is_some() && parser.parse_keywords(&[Keyword::ON, Keyword::PARTITIONS]) {
            Some(list(&mut parser)?)
        } else {
            None
        };
        Statement::PartitionTable { table, column, ranges, owners }
    } else if parser.parse_keywords(&[Keyword::SWAP, Keyword::TABLE]) {
        let a = parser.parse_object_name(false).map_err(syntax)?;
        parser.expect_keyword(Keyword::WITH).map_err(syntax)?;
        let b = parser.parse_object_name(false).map_err(syntax)?;
        Statement::SwapTables { a, b }
    } else if parser.parse_keywords(&[Keyword::DROP, Keyword::DATABASE]) {
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = parser.parse_identifier().map_err(syntax)?;
        Statement::DropDatabase { name, if_exists }
    } else if parser.parse_keywords(&[Keyword::CREATE, Keyword::DATABASE]) {
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = parser.parse_identifier().map_err(syntax)?;
        Statement::CreateDatabase { name, if_not_exists }
    } else {
        let stmt = parser.parse_statement().map_err(syntax)?;
        if upsert {
            Statement::Upsert(Box::new(stmt))
        } else {
            Statement::Standard(Box::new(stmt))
        }
    };
    // Nothing may follow the statement.
    let _ = parser.consume_token(&Token::SemiColon);
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(err!(SyntaxError, "syntax error: unexpected {} after the end of the statement", next.token));
    }
    Ok(ParsedStatement { statement, assume_unique, sql })
}

/// Two spellings sqlparser rejects. `x IN ()` (an empty list) is always
/// false: it becomes `x IN (SELECT 1 WHERE 1 = 0)`, an empty subquery with
/// the same meaning for NULL and NOT IN. `x IN ?` (VoltDB's array
/// parameter) becomes `x IN (?)`: a one-item list whose item, when the
/// parameter is an array, stands for the array's elements.
fn rewrite_in_lists(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        out.push(tokens[i].clone());
        if is_word(&tokens[i], "IN") {
            let mut j = i + 1;
            while matches!(tokens.get(j), Some(Token::Whitespace(_))) {
                j += 1;
            }
            if let Some(p @ Token::Placeholder(_)) = tokens.get(j) {
                out.extend([Token::LParen, p.clone(), Token::RParen]);
                i = j + 1;
                continue;
            }
            if tokens.get(j) == Some(&Token::LParen) {
                let mut k = j + 1;
                while matches!(tokens.get(k), Some(Token::Whitespace(_))) {
                    k += 1;
                }
                if tokens.get(k) == Some(&Token::RParen) {
                    let empty =
                        Tokenizer::new(&GenericDialect {}, "(SELECT 1 WHERE 1 = 0)").tokenize().unwrap_or_default();
                    out.push(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space));
                    out.extend(empty);
                    i = k + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn voltdb_statements() {
        let p = parse("PARTITION TABLE votes ON COLUMN phone_number;").unwrap();
        assert!(
            matches!(&p[0].statement, Statement::PartitionTable { column, ranges: None, .. } if column.value == "phone_number")
        );
        let p = parse("PARTITION TABLE t ON COLUMN c USING RANGE (100, 'x', -5);").unwrap();
        assert!(matches!(&p[0].statement, Statement::PartitionTable { ranges: Some(b), .. } if b.len() == 3));
        assert!(parse("PARTITION TABLE t ON COLUMN c USING RANGE 100").is_err());
        assert!(parse("PARTITION TABLE t ON COLUMN c USING RANGE ()").is_err());
        let p = parse("PARTITION TABLE t ON COLUMN c USING RANGE (10, 20) ON PARTITIONS (1, 0, 1)").unwrap();
        assert!(matches!(&p[0].statement, Statement::PartitionTable { owners: Some(o), .. } if o.len() == 3));
        assert!(parse("PARTITION TABLE t ON COLUMN c ON PARTITIONS (1)").is_err());
        assert!(parse("PARTITION TABLE t ON COLUMN c USING RANGE (1) ON PARTITIONS").is_err());
        let p = parse("UPSERT INTO t VALUES (1, 2)").unwrap();
        assert!(matches!(p[0].statement, Statement::Upsert(_)));
        let p = parse("CREATE TABLE t (a VARCHAR(10 BYTES) ASSUMEUNIQUE, b INT UNIQUE)").unwrap();
        assert_eq!(p[0].assume_unique, vec![0]);
        let p = parse("DROP DATABASE IF EXISTS sales; CREATE DATABASE sales").unwrap();
        assert_eq!(p.len(), 2);
        let array = parse("SELECT * FROM t WHERE a IN ? AND b NOT IN ?").unwrap();
        let list = parse("SELECT * FROM t WHERE a IN (?) AND b NOT IN (?)").unwrap();
        assert_eq!(format!("{:?}", array[0].statement), format!("{:?}", list[0].statement));
    }

    #[test]
    fn scripts_split_on_semicolons() {
        let p = parse("SELECT 1; ; SELECT 'a;b'; ").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].sql, "SELECT 'a;b'");
    }

    #[test]
    fn errors_are_syntax_errors() {
        let e = parse("SELEC 1").unwrap_err();
        assert_eq!(e.code(), joule_common::ErrorCode::SyntaxError);
        assert!(parse("SELECT 1 2 3").is_err());
        assert!(parse("PARTITION TABLE t ON c").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_garbage(s in "\\PC{0,60}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_sqlish(s in "(SELECT|FROM|WHERE|PARTITION|TABLE|UPSERT|INTO|VALUES|\\(|\\)|,|;|\\?|'x'|1|a|=|BYTES|ASSUMEUNIQUE| )*") {
            let _ = parse(&s);
        }
    }
}
