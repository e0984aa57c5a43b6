//! Cron expressions with seconds (`sec min hour dom mon dow [year]`, as the `cron` crate reads
//! them) evaluated in an IANA time zone, so "every day at 09:00 Europe/Paris" follows the
//! zone's daylight-saving changes.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct CronSpec {
    schedule: cron::Schedule,
    tz: Tz,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("not a cron expression with seconds (sec min hour day-of-month month day-of-week [year]): {0}")]
    Expression(String),
    #[error("not an IANA time zone (such as UTC or Europe/Paris)")]
    TimeZone,
    #[error("the expression never fires again")]
    NeverFires,
}

impl CronSpec {
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let schedule = cron::Schedule::from_str(expression)
            .map_err(|e| CronError::Expression(e.to_string()))?;
        let tz = Tz::from_str(timezone).map_err(|_| CronError::TimeZone)?;
        Ok(Self { schedule, tz })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Checks that the expression still fires, for validation.
    pub fn check_fires(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, CronError> {
        self.next_after(now).ok_or(CronError::NeverFires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn seconds_and_zones() {
        let every_second = CronSpec::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.next_after(at("2026-01-01T00:00:00.5Z")),
            Some(at("2026-01-01T00:00:01Z"))
        );
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        let nine = CronSpec::parse("0 0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            nine.next_after(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-11T08:00:00Z"))
        );
        assert_eq!(
            nine.next_after(at("2026-07-10T12:00:00Z")),
            Some(at("2026-07-11T07:00:00Z"))
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            CronSpec::parse("every minute", "UTC"),
            Err(CronError::Expression(_))
        ));
        assert!(matches!(
            CronSpec::parse("0 0 * * *", "UTC"),
            Err(CronError::Expression(_))
        ));
        assert_eq!(
            CronSpec::parse("* * * * * *", "Mars/Olympus").unwrap_err(),
            CronError::TimeZone
        );
        // Odd input is refused or evaluated, never a panic or an endless search.
        for odd in [
            "*/0 * * * * *",
            "0 0 0 31 2 *",
            "0 0 0 1 1 * 2999",
            "99 * * * * *",
            "",
            "* * * * * * * *",
        ] {
            if let Ok(spec) = CronSpec::parse(odd, "UTC") {
                let _ = spec.check_fires(Utc::now());
            }
        }
        let past = CronSpec::parse("0 0 0 1 1 * 2001", "UTC").unwrap();
        assert_eq!(past.check_fires(Utc::now()), Err(CronError::NeverFires));
    }
}
