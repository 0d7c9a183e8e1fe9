//! The one error type of JouleDB.
//!
//! Every failure a user can see carries an [`ErrorCode`]: a stable number that
//! never changes meaning once released, the SQLSTATE class that fits it best
//! (so PostgreSQL-minded tools and users recognise it), and a message written
//! for the person who has to fix the statement or the data. Codes are grouped
//! by the layer that raises them:
//!
//! | range | layer |
//! |-------|-------|
//! | 1000–1999 | SQL text: syntax, names, types, planning |
//! | 2000–2999 | data: values out of range, casts, constraints |
//! | 3000–3999 | schema changes (DDL) |
//! | 9000–9999 | internal faults (a bug in JouleDB, never the user's fault) |
//!
//! Codes are listed once, in [`ErrorCode`], and documented in `docs/errors.md`.
//! Adding a code is fine; renumbering or reusing one is not. There is no
//! catch-all variant: a new kind of failure gets a new code.

use std::fmt;

/// A stable error code. The discriminant is the public number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The SQL text does not parse.
    SyntaxError = 1001,
    /// The statement parses but uses a feature JouleDB does not implement.
    FeatureNotSupported = 1002,
    /// A table or view name does not exist.
    UndefinedTable = 1003,
    /// A column name does not exist in any table in scope.
    UndefinedColumn = 1004,
    /// A function name (or its argument count) is unknown.
    UndefinedFunction = 1005,
    /// An index, database or other named object does not exist.
    UndefinedObject = 1006,
    /// A column name matches columns of more than one table in scope.
    AmbiguousColumn = 1007,
    /// An operand or argument has a type the operation does not accept.
    DatatypeMismatch = 1008,
    /// The wrong number of `?` parameters was supplied.
    WrongParameterCount = 1009,
    /// A column is used outside an aggregate in a grouped query.
    GroupingError = 1010,
    /// An ORDER BY / GROUP BY ordinal is out of range, or similar misuse.
    InvalidColumnReference = 1011,
    /// A scalar subquery returned more than one row.
    CardinalityViolation = 1012,
    /// A subquery, UNION or INSERT has the wrong number of columns.
    ColumnCountMismatch = 1013,
    /// An aggregate appears where aggregates are not allowed (WHERE, nested).
    AggregateMisuse = 1014,

    /// A numeric value does not fit its type (including integer overflow).
    NumericOutOfRange = 2001,
    /// Division (or modulo) by zero.
    DivisionByZero = 2002,
    /// A string or binary value is longer than its column allows.
    StringTooLong = 2003,
    /// A text value cannot be read as the requested type.
    InvalidTextRepresentation = 2004,
    /// A timestamp is malformed or out of range.
    InvalidDatetime = 2005,
    /// A NULL went into a NOT NULL column.
    NotNullViolation = 2006,
    /// A row would duplicate a PRIMARY KEY or UNIQUE key.
    UniqueViolation = 2007,
    /// A value is larger than the 1 MiB limit for VARCHAR/VARBINARY.
    ValueTooLarge = 2008,
    /// A function argument is outside the function's domain.
    InvalidArgument = 2009,
    /// A LIKE pattern is malformed (bad escape).
    InvalidEscapeSequence = 2010,

    /// CREATE of a table, index, view or database that already exists.
    DuplicateObject = 3001,
    /// A schema definition is invalid (two primary keys, bad column, ...).
    InvalidSchemaDefinition = 3002,
    /// DROP of an object that others depend on (a table with views).
    DependentObjectsExist = 3003,
    /// A schema change that would violate the data already stored.
    SchemaChangeConflict = 3004,

    /// A procedure name that no procedure (user, CRUD or system) has.
    UndefinedProcedure = 4001,
    /// A single-partition transaction touched a row of another partition.
    Mispartitioned = 4002,
    /// A procedure aborted itself (its app status and message say why).
    ProcedureAborted = 4003,
    /// The host is shutting down or not accepting work.
    Unavailable = 4004,
    /// The user lacks the role a procedure needs (admin procedures need
    /// the ADMINISTRATOR role or the admin port).
    PermissionDenied = 4005,
    /// The call may or may not have taken effect: it was sent, and the
    /// answer was lost (a host failed or was cut off before confirming it).
    /// Read back before retrying anything that is not idempotent.
    OutcomeUnknown = 4006,

    /// A malformed message on the wire: bad length, truncated, unknown
    /// version or type, invalid text.
    ProtocolError = 5001,

    /// Reading or writing the data directory failed (a full disk, a failed
    /// fsync, a missing permission). A write that hit it was not
    /// acknowledged.
    IoError = 6001,
    /// Stored data fails its checksum or does not decode: a corrupt
    /// command-log segment or snapshot file.
    CorruptData = 6002,
    /// The data directory does not fit this start (another partition
    /// count, missing files, an unknown format); the message says what to
    /// do.
    RecoveryFailed = 6003,
    /// A snapshot request that cannot be carried out (unknown nonce, one
    /// already running, a bad directory).
    SnapshotFailed = 6004,

    /// A broken invariant inside JouleDB. Always a bug: please report it.
    Internal = 9001,
}

impl ErrorCode {
    /// Every code, in number order (for documentation checks and tools).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::SyntaxError,
        ErrorCode::FeatureNotSupported,
        ErrorCode::UndefinedTable,
        ErrorCode::UndefinedColumn,
        ErrorCode::UndefinedFunction,
        ErrorCode::UndefinedObject,
        ErrorCode::AmbiguousColumn,
        ErrorCode::DatatypeMismatch,
        ErrorCode::WrongParameterCount,
        ErrorCode::GroupingError,
        ErrorCode::InvalidColumnReference,
        ErrorCode::CardinalityViolation,
        ErrorCode::ColumnCountMismatch,
        ErrorCode::AggregateMisuse,
        ErrorCode::NumericOutOfRange,
        ErrorCode::DivisionByZero,
        ErrorCode::StringTooLong,
        ErrorCode::InvalidTextRepresentation,
        ErrorCode::InvalidDatetime,
        ErrorCode::NotNullViolation,
        ErrorCode::UniqueViolation,
        ErrorCode::ValueTooLarge,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidEscapeSequence,
        ErrorCode::DuplicateObject,
        ErrorCode::InvalidSchemaDefinition,
        ErrorCode::DependentObjectsExist,
        ErrorCode::SchemaChangeConflict,
        ErrorCode::UndefinedProcedure,
        ErrorCode::Mispartitioned,
        ErrorCode::ProcedureAborted,
        ErrorCode::Unavailable,
        ErrorCode::PermissionDenied,
        ErrorCode::OutcomeUnknown,
        ErrorCode::ProtocolError,
        ErrorCode::IoError,
        ErrorCode::CorruptData,
        ErrorCode::RecoveryFailed,
        ErrorCode::SnapshotFailed,
        ErrorCode::Internal,
    ];

    /// The code with this public number.
    pub fn from_number(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.number() == n)
    }

    /// The stable public number of this code.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The SQLSTATE that fits this code best.
    pub fn sqlstate(self) -> &'static str {
        use ErrorCode::*;
        match self {
            SyntaxError => "42601",
            FeatureNotSupported => "0A000",
            UndefinedTable => "42P01",
            UndefinedColumn => "42703",
            UndefinedFunction => "42883",
            UndefinedObject => "42704",
            AmbiguousColumn => "42702",
            DatatypeMismatch => "42804",
            WrongParameterCount => "07001",
            GroupingError => "42803",
            InvalidColumnReference => "42P10",
            CardinalityViolation => "21000",
            ColumnCountMismatch => "42601",
            AggregateMisuse => "42803",
            NumericOutOfRange => "22003",
            DivisionByZero => "22012",
            StringTooLong => "22001",
            InvalidTextRepresentation => "22P02",
            InvalidDatetime => "22007",
            NotNullViolation => "23502",
            UniqueViolation => "23505",
            ValueTooLarge => "54000",
            InvalidArgument => "22023",
            InvalidEscapeSequence => "22025",
            DuplicateObject => "42P07",
            InvalidSchemaDefinition => "42P16",
            DependentObjectsExist => "2BP01",
            SchemaChangeConflict => "55000",
            UndefinedProcedure => "42883",
            Mispartitioned => "JT001",
            ProcedureAborted => "P0001",
            Unavailable => "57P01",
            PermissionDenied => "42501",
            OutcomeUnknown => "08007",
            ProtocolError => "08P01",
            IoError => "58030",
            CorruptData => "XX001",
            RecoveryFailed => "55000",
            SnapshotFailed => "58000",
            Internal => "XX000",
        }
    }
}

/// A JouleDB error: a stable code plus a message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Read back an error from its printed form (`[J2007 23505] message`),
    /// as clients receive it in a status string; `fallback` when the text
    /// carries no known code.
    pub fn parse(text: &str, fallback: ErrorCode) -> Error {
        let parsed = text.strip_prefix("[J").and_then(|rest| {
            let (code, rest) = rest.split_once(' ')?;
            let (_, message) = rest.split_once("] ")?;
            Some((ErrorCode::from_number(code.parse().ok()?)?, message))
        });
        match parsed {
            Some((code, message)) => Error::new(code, message),
            None => Error::new(fallback, text),
        }
    }

    /// The same error with `context` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Error { code: self.code, message: format!("{context}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[J{} {}] {}", self.code.number(), self.code.sqlstate(), self.message)
    }
}

impl std::error::Error for Error {}

/// The result type used throughout JouleDB.
pub type Result<T> = std::result::Result<T, Error>;

/// Build an [`Error`] with `format!` arguments:
/// `err!(UndefinedTable, "table {name} does not exist")`.
#[macro_export]
macro_rules! err {
    ($code:ident, $($arg:tt)*) => {
        $crate::error::Error::new($crate::error::ErrorCode::$code, format!($($arg)*))
    };
}

/// Return early with an [`Error`]: `bail!(DivisionByZero, "division by zero")`.
#[macro_export]
macro_rules! bail {
    ($code:ident, $($arg:tt)*) => {
        return Err($crate::err!($code, $($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_code_and_sqlstate() {
        let e = err!(UniqueViolation, "duplicate key in table T");
        assert_eq!(e.to_string(), "[J2007 23505] duplicate key in table T");
        assert_eq!(e.code(), ErrorCode::UniqueViolation);
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/errors.md");
        for code in ErrorCode::ALL {
            let row = format!("| J{} | {:?} | {} |", code.number(), code, code.sqlstate());
            assert!(doc.contains(&row), "docs/errors.md lacks the row for {code:?}: {row}");
        }
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len(), "ALL lists a code twice");
    }

    #[test]
    fn codes_are_stable_numbers() {
        // These numbers are public: changing one breaks users' error handling.
        assert_eq!(ErrorCode::SyntaxError.number(), 1001);
        assert_eq!(ErrorCode::NumericOutOfRange.number(), 2001);
        assert_eq!(ErrorCode::DuplicateObject.number(), 3001);
        assert_eq!(ErrorCode::Internal.number(), 9001);
    }
}
