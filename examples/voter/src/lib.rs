//! The voter application: JouleDB's standard benchmark, after VoltDB's.
//!
//! Callers vote for contestants of a talent show by phone. Each vote checks
//! that the contestant exists, that the caller has not used up their votes,
//! looks up the caller's state by area code, and records the vote — one
//! single-partition transaction on the partition owning the phone number.
//! The results board sums votes per contestant across all partitions.
//!
//! * [`DDL`]: the schema (`ddl.sql`): replicated `contestants` and
//!   `area_code_state`, `votes` partitioned on `phone_number`, two views.
//! * [`register`]: the native procedures `voter.Initialize`, `voter.Vote`
//!   and `voter.Results`, for a host's procedure registry.
//! * [`CallGenerator`]: a deterministic stream of votes for load tests.

use joule_common::{Result, Value};
use joule_txn::procedure::{param_i64, param_str};
use joule_txn::{Procedure, ProcedureContext, ProcedureRegistry, ResultTable};

/// The voter schema and procedure declarations.
pub const DDL: &str = include_str!("../ddl.sql");

/// Contestant names `Initialize` is usually called with.
pub const CONTESTANTS: &str =
    "Edwina Burnam,Tabatha Gehling,Kelly Clauss,Jessie Alloway,Alana Bregman,Jessie Eichman,Allie Rogalski,Nita Coster,Kurt Walser,Ericka Dieter,Loraine Nygren,Tania Mattioli";

/// `Vote` answers.
pub const VOTE_ACCEPTED: i64 = 0;
pub const VOTE_INVALID_CONTESTANT: i64 = 1;
pub const VOTE_OVER_LIMIT: i64 = 2;

/// State abbreviations the area codes are spread over.
const STATES: [&str; 51] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA",
    "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR",
    "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
];

/// The area codes `Initialize` loads, with their states: every North
/// American-style code 201–989 whose middle digit is not 9 and which is not
/// an N11 service code, assigned to states in turn. (A synthetic map: the
/// benchmark needs a realistic lookup, not real geography.)
pub fn area_codes() -> Vec<(i64, &'static str)> {
    (201..=989)
        .filter(|c| (c / 10) % 10 != 9 && c % 100 != 11)
        .enumerate()
        .map(|(i, c)| (c, STATES[i % STATES.len()]))
        .collect()
}

/// Register the voter procedures (`voter.Initialize`, `voter.Vote`,
/// `voter.Results`).
pub fn register(registry: &mut ProcedureRegistry) {
    registry.register("voter.Initialize", Initialize).register("voter.Vote", Vote).register("voter.Results", Results);
}

/// `Initialize(max_contestants, names_csv)`: load contestants and area codes
/// unless already loaded; returns the number of contestants.
pub struct Initialize;

impl Procedure for Initialize {
    fn statements(&self) -> &[&'static str] {
        &[
            "SELECT COUNT(*) FROM contestants",
            "INSERT INTO contestants (contestant_name, contestant_number) VALUES (?, ?)",
            "INSERT INTO area_code_state VALUES (?, ?)",
        ]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let max = param_i64(params, 0)?;
        let names: Vec<&str> = param_str(params, 1)?.split(',').map(str::trim).collect();
        ctx.queue(0, []);
        let existing = ctx.execute()?[0].as_i64().unwrap_or(0);
        if existing > 0 {
            return Ok(vec![ResultTable::scalar(existing)]);
        }
        let count = max.clamp(0, names.len() as i64);
        for (i, name) in names.iter().take(count as usize).enumerate() {
            ctx.queue(1, [Value::String(name.to_string()), Value::Integer(i as i64 + 1)]);
        }
        for (code, state) in area_codes() {
            ctx.queue(2, [Value::Integer(code), Value::String(state.to_string())]);
        }
        ctx.execute()?;
        Ok(vec![ResultTable::scalar(count)])
    }
}

/// `Vote(phone_number, contestant_number, max_votes_per_phone_number)`:
/// returns 0 (accepted), 1 (no such contestant) or 2 (over the limit).
pub struct Vote;

impl Procedure for Vote {
    fn statements(&self) -> &[&'static str] {
        &[
            "SELECT contestant_number FROM contestants WHERE contestant_number = ?",
            "SELECT num_votes FROM v_votes_by_phone_number WHERE phone_number = ?",
            "SELECT state FROM area_code_state WHERE area_code = ?",
            "INSERT INTO votes (phone_number, state, contestant_number) VALUES (?, ?, ?)",
        ]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let phone = param_i64(params, 0)?;
        let contestant = param_i64(params, 1)?;
        let max_votes = param_i64(params, 2)?;
        ctx.queue(0, [Value::Integer(contestant)]);
        ctx.queue(1, [Value::Integer(phone)]);
        ctx.queue(2, [Value::Integer(phone / 10_000_000)]);
        let checks = ctx.execute()?;
        if checks[0].rows.is_empty() {
            return Ok(vec![ResultTable::scalar(VOTE_INVALID_CONTESTANT)]);
        }
        if checks[1].as_i64().unwrap_or(0) >= max_votes {
            return Ok(vec![ResultTable::scalar(VOTE_OVER_LIMIT)]);
        }
        let state = match checks[2].first_value() {
            Some(Value::String(s)) => Value::String(s.clone()),
            _ => Value::String("XX".to_string()),
        };
        ctx.queue(3, [Value::Integer(phone), state, Value::Integer(contestant)]);
        ctx.execute()?;
        Ok(vec![ResultTable::scalar(VOTE_ACCEPTED)])
    }
}

/// `Results()`: every contestant's total votes, best first.
pub struct Results;

impl Procedure for Results {
    fn statements(&self) -> &[&'static str] {
        &["SELECT a.contestant_name AS contestant_name, a.contestant_number AS contestant_number, \
           SUM(b.num_votes) AS total_votes \
           FROM v_votes_by_contestant_number_state AS b, contestants AS a \
           WHERE a.contestant_number = b.contestant_number \
           GROUP BY a.contestant_name, a.contestant_number \
           ORDER BY total_votes DESC, contestant_number ASC, contestant_name ASC"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, _params: &[Value]) -> Result<Vec<ResultTable>> {
        ctx.queue(0, []);
        ctx.execute()
    }
}

/// A deterministic stream of votes: phone numbers from the loaded area
/// codes, contestants 1..=n with about 1 in 100 votes for a contestant that
/// does not exist.
pub struct CallGenerator {
    state: u64,
    codes: Vec<i64>,
    contestants: i64,
}

impl CallGenerator {
    pub fn new(seed: u64, contestants: i64) -> CallGenerator {
        CallGenerator { state: seed, codes: area_codes().into_iter().map(|(c, _)| c).collect(), contestants }
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next (phone number, contestant number).
    pub fn next_call(&mut self) -> (i64, i64) {
        let r = self.next_u64();
        let code = self.codes[(r % self.codes.len() as u64) as usize];
        let phone = code * 10_000_000 + ((r >> 20) % 10_000_000) as i64;
        let contestant =
            if (r >> 50).is_multiple_of(100) { 999 } else { ((r >> 40) % self.contestants as u64) as i64 + 1 };
        (phone, contestant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_codes_are_unique_and_three_digits() {
        let codes = area_codes();
        let mut seen = std::collections::BTreeSet::new();
        for (c, s) in &codes {
            assert!((200..1000).contains(c) && s.len() == 2);
            assert!(seen.insert(*c));
        }
        assert!(codes.len() > 500);
    }

    #[test]
    fn calls_use_loaded_area_codes() {
        let codes: std::collections::BTreeSet<i64> = area_codes().into_iter().map(|(c, _)| c).collect();
        let mut g = CallGenerator::new(7, 6);
        for _ in 0..1000 {
            let (phone, contestant) = g.next_call();
            assert!(codes.contains(&(phone / 10_000_000)));
            assert!((1..=6).contains(&contestant) || contestant == 999);
        }
    }
}
