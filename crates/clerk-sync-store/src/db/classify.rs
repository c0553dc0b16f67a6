//! Database errors sorted by what the worker should do about them: an outage of the whole database
//! (pause, retry, dead-letter nothing), a permanent refusal of the data, or a failure worth
//! retrying through the retry queues.

/// How a database failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database as a whole cannot take writes now (unreachable, read-only, refusing us, our
    /// schema missing): pause, retry, dead-letter nothing.
    Outage(Condition),
    /// The data itself is refused (bad value, constraint): retrying cannot help.
    Permanent,
    /// Anything else: retry through the retry queues, dead-letter after the attempt limit.
    Retryable,
}

/// Why the database cannot take writes; a label of `clerk_sync_worker_database_pauses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// No connection: refused, reset, timed out, the server shutting down.
    Unreachable,
    /// Connected to a read-only server (a standby after a failover) or session (SQLSTATE class 25).
    ReadOnly,
    /// The server refuses our credentials (class 28).
    Authentication,
    /// The database named in the URL does not exist (3D000).
    MissingDatabase,
    /// Our role lost a privilege (42501).
    Permission,
    /// `statement_timeout` cancelled the statement (57014).
    StatementTimeout,
    /// The server's disk or files failed (class 58).
    Io,
    /// Out of connections, memory or disk (class 53).
    Resources,
    /// Our tables or functions are missing: migrations not applied (42P01, 42883, 3F000).
    SchemaMissing,
    /// A serialization failure, deadlock or lock timeout: this transaction only, retried at once.
    Conflict,
}

impl Condition {
    pub const ALL: [Self; 10] = [
        Self::Unreachable,
        Self::ReadOnly,
        Self::Authentication,
        Self::MissingDatabase,
        Self::Permission,
        Self::StatementTimeout,
        Self::Io,
        Self::Resources,
        Self::SchemaMissing,
        Self::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::ReadOnly => "read_only",
            Self::Authentication => "authentication",
            Self::MissingDatabase => "missing_database",
            Self::Permission => "permission",
            Self::StatementTimeout => "statement_timeout",
            Self::Io => "io",
            Self::Resources => "resources",
            Self::SchemaMissing => "schema_missing",
            Self::Conflict => "conflict",
        }
    }

    /// Whether the health probe (a read-only check of the session and our schema) can tell that
    /// this condition is over. A statement timeout or a conflict only ends when a write succeeds.
    pub fn probe_can_clear(self) -> bool {
        !matches!(self, Self::StatementTimeout | Self::Io | Self::Resources | Self::Conflict)
    }
}

/// Classifies a failure: by SQLSTATE for errors the server sent, as an outage for every failure
/// to reach it.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Outage(Condition::Unreachable),
        sqlx::Error::Database(db) => classify_code(&db.code().unwrap_or_default()),
        _ => ErrorClass::Retryable,
    }
}

/// Classifies a SQLSTATE. Every statement the worker runs touches only schema `clerk`, so an
/// undefined table or function there means migrations are missing, not that a message is bad.
pub fn classify_code(code: &str) -> ErrorClass {
    let outage = ErrorClass::Outage;
    match code {
        c if c.starts_with("08") || c.starts_with("57P") => outage(Condition::Unreachable),
        c if c.starts_with("25") => outage(Condition::ReadOnly),
        c if c.starts_with("28") => outage(Condition::Authentication),
        "3D000" => outage(Condition::MissingDatabase),
        "42501" => outage(Condition::Permission),
        "57014" => outage(Condition::StatementTimeout),
        c if c.starts_with("58") => outage(Condition::Io),
        c if c.starts_with("53") => outage(Condition::Resources),
        "42P01" | "42883" | "3F000" => outage(Condition::SchemaMissing),
        "40001" | "40P01" | "55P03" => outage(Condition::Conflict),
        c if c.starts_with("22") || c.starts_with("23") => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_database_conditions_are_outages_and_bad_data_is_permanent() {
        let cases = [
            ("25006", ErrorClass::Outage(Condition::ReadOnly)),
            ("28P01", ErrorClass::Outage(Condition::Authentication)),
            ("28000", ErrorClass::Outage(Condition::Authentication)),
            ("3D000", ErrorClass::Outage(Condition::MissingDatabase)),
            ("42501", ErrorClass::Outage(Condition::Permission)),
            ("57014", ErrorClass::Outage(Condition::StatementTimeout)),
            ("58030", ErrorClass::Outage(Condition::Io)),
            ("42P01", ErrorClass::Outage(Condition::SchemaMissing)),
            ("42883", ErrorClass::Outage(Condition::SchemaMissing)),
            ("08006", ErrorClass::Outage(Condition::Unreachable)),
            ("57P01", ErrorClass::Outage(Condition::Unreachable)),
            ("53300", ErrorClass::Outage(Condition::Resources)),
            ("40P01", ErrorClass::Outage(Condition::Conflict)),
            ("22P02", ErrorClass::Permanent),
            ("23505", ErrorClass::Permanent),
            ("XX000", ErrorClass::Retryable),
        ];
        for (code, class) in cases {
            assert_eq!(classify_code(code), class, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Outage(Condition::Unreachable));
    }
}
