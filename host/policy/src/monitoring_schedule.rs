//! Monitoring schedules as SageMaker takes them: `ScheduleExpression` (hourly
//! `cron(0 * ? * * *)`, daily `cron(0 H ? * * *)`, every N hours from H
//! `cron(0 H/N ? * * *)`, or `NOW` once) and, as Plinth's extension for tests and demos, a
//! period of its own, `rate(N seconds|minutes|hours)`; the ISO 8601 offsets that place an execution's
//! window (`DataAnalysisStartTime`/`EndTime`, `StartTimeOffset`/`EndTimeOffset`: `-PT1H`,
//! `-P1D`...); and when each execution is due. Times are milliseconds since the Unix epoch.

/// A parsed `ScheduleExpression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// On the hour, every `every` hours from hour `start` (UTC) of each day: hourly is
    /// `start 0, every 1`, daily `start H, every 24`.
    Hours {
        /// First hour of the day, 0-23.
        start: u32,
        /// Hours between runs, 1-24.
        every: u32,
    },
    /// Once, as soon as the schedule is created (`NOW`).
    Now,
    /// Plinth's extension: every this many milliseconds from the schedule's creation.
    Rate(i64),
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The shortest `rate(...)` period, and the longest.
pub const RATE_SECONDS: (i64, i64) = (1, 86_400);

/// Parse a `ScheduleExpression`; the error says what SageMaker takes.
pub fn parse(expression: &str) -> Result<Schedule, String> {
    let refused = || {
        format!(
            "ScheduleExpression {expression:?} is not one of SageMaker's forms: \
             cron(0 * ? * * *) (hourly), cron(0 H ? * * *) (daily at hour H, UTC), \
             cron(0 H/N ? * * *) (every N hours from H), NOW (once), or Plinth's \
             rate(N seconds|minutes|hours)"
        )
    };
    let text = expression.trim();
    if text == "NOW" {
        return Ok(Schedule::Now);
    }
    if let Some(body) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
        let mut parts = body.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(refused());
        };
        let n: i64 = n.parse().map_err(|_| refused())?;
        let unit = match unit.trim_end_matches('s') {
            "second" => 1,
            "minute" => 60,
            "hour" => 3600,
            _ => return Err(refused()),
        };
        let seconds = n.checked_mul(unit).ok_or_else(refused)?;
        if !(RATE_SECONDS.0..=RATE_SECONDS.1).contains(&seconds) {
            return Err(format!(
                "ScheduleExpression {expression:?}: a rate is {} second to {} seconds",
                RATE_SECONDS.0, RATE_SECONDS.1
            ));
        }
        return Ok(Schedule::Rate(seconds * 1000));
    }
    let body = text
        .strip_prefix("cron(")
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(refused)?;
    let fields: Vec<&str> = body.split_whitespace().collect();
    let ["0", hours, "?", "*", "*", "*"] = fields.as_slice() else {
        return Err(refused());
    };
    let hour = |t: &str| t.parse::<u32>().ok().filter(|h| *h <= 23);
    let (start, every) = match hours.split_once('/') {
        _ if *hours == "*" => (0, 1),
        Some((start, every)) => {
            let start = if start == "*" { Some(0) } else { hour(start) };
            let every = every.parse::<u32>().ok().filter(|e| (1..=24).contains(e));
            (start.ok_or_else(refused)?, every.ok_or_else(refused)?)
        }
        None => (hour(hours).ok_or_else(refused)?, 24),
    };
    Ok(Schedule::Hours { start, every })
}

/// An ISO 8601 offset such as `-PT1H`, `-P1D`, `-PT30M` or `-PT0H`, in milliseconds
/// (negative: before the scheduled time). `member` names it in the error.
pub fn offset(member: &str, text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{member} {text:?} is not an ISO 8601 duration before the scheduled time \
             (-P1D, -PT1H, -PT30M, -PT0H...)"
        )
    };
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let rest = rest.strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut ms = 0i64;
    let mut take = |part: &str, units: &[(char, i64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut any = false;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| *u == c).ok_or_else(bad)?;
                let n: i64 = number.parse().map_err(|_| bad())?;
                ms = n
                    .checked_mul(unit.1)
                    .and_then(|v| ms.checked_add(v))
                    .ok_or_else(bad)?;
                number.clear();
                any = true;
            }
        }
        if !number.is_empty() || (!any && !part.is_empty()) {
            return Err(bad());
        }
        Ok(())
    };
    take(days, &[('D', DAY_MS), ('W', 7 * DAY_MS)])?;
    if let Some(time) = time {
        if time.is_empty() {
            return Err(bad());
        }
        take(time, &[('H', HOUR_MS), ('M', 60_000), ('S', 1000)])?;
    }
    if days.is_empty() && time.is_none() {
        return Err(bad());
    }
    if sign > 0 && ms > 0 {
        return Err(format!(
            "{member} {text:?} must not be after the scheduled time"
        ));
    }
    Ok(sign * ms)
}

/// The window an execution scheduled at `scheduled` analyses: `[scheduled + start,
/// scheduled + end)`, checked as SageMaker does (start before end, at most 24 hours apart).
pub fn window(
    scheduled: i64,
    start: i64,
    end: i64,
    members: (&str, &str),
) -> Result<(i64, i64), String> {
    if start >= end {
        return Err(format!("{} must be before {}", members.0, members.1));
    }
    if end - start > DAY_MS {
        return Err(format!(
            "{} must not precede {} by more than 24 hours",
            members.0, members.1
        ));
    }
    Ok((scheduled + start, scheduled + end))
}

/// When the first execution after `after` is due (`created`: when the schedule was
/// created, which a rate counts from); `None` for `NOW` once it has run (`ran`).
pub fn next(schedule: Schedule, created: i64, after: i64, ran: bool) -> Option<i64> {
    match schedule {
        Schedule::Now => (!ran).then_some(created),
        Schedule::Rate(period) => {
            let k = (after - created).div_euclid(period) + 1;
            Some(created + k.max(1) * period)
        }
        Schedule::Hours { start, every } => {
            let hour = after.div_euclid(HOUR_MS) + 1;
            (hour..hour + 48)
                .find(|h| {
                    let of_day = h.rem_euclid(24) as u32;
                    of_day >= start && (of_day - start).is_multiple_of(every)
                })
                .map(|h| h * HOUR_MS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sagemakers_forms_and_plinths_rate() {
        assert_eq!(
            parse("cron(0 * ? * * *)"),
            Ok(Schedule::Hours { start: 0, every: 1 })
        );
        assert_eq!(
            parse("cron(0 12 ? * * *)"),
            Ok(Schedule::Hours {
                start: 12,
                every: 24
            })
        );
        assert_eq!(
            parse("cron(0 17/12 ? * * *)"),
            Ok(Schedule::Hours {
                start: 17,
                every: 12
            })
        );
        assert_eq!(parse("NOW"), Ok(Schedule::Now));
        assert_eq!(parse("rate(5 seconds)"), Ok(Schedule::Rate(5000)));
        assert_eq!(parse("rate(1 minute)"), Ok(Schedule::Rate(60_000)));
        for bad in [
            "cron(30 * ? * * *)",
            "cron(0 * * * ? *)",
            "cron(0 24 ? * * *)",
            "cron(0 1/0 ? * * *)",
            "cron(0 * ? * MON *)",
            "every hour",
            "rate(0 seconds)",
            "rate(2 days)",
            "rate(9223372036854775807 hours)",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert!(parse("cron(30 * ? * * *)")
            .unwrap_err()
            .contains("cron(0 * ? * * *) (hourly)"));
    }

    #[test]
    fn offsets_in_iso_8601() {
        assert_eq!(offset("m", "-PT1H"), Ok(-HOUR_MS));
        assert_eq!(offset("m", "-P1D"), Ok(-DAY_MS));
        assert_eq!(
            offset("m", "-P1DT2H30M"),
            Ok(-(DAY_MS + 2 * HOUR_MS + 1_800_000))
        );
        assert_eq!(offset("m", "-PT0H"), Ok(0));
        assert_eq!(offset("m", "PT0S"), Ok(0));
        for bad in ["PT1H", "-1H", "-PT", "-P", "-PTH", "-PT1X", "-PT1H2"] {
            assert!(offset("m", bad).is_err(), "{bad} accepted");
        }
        assert!(window(0, -HOUR_MS, 0, ("a", "b")).is_ok());
        assert!(window(0, 0, -HOUR_MS, ("a", "b")).is_err());
        assert!(window(0, -2 * DAY_MS, 0, ("a", "b"))
            .unwrap_err()
            .contains("24 hours"));
    }

    #[test]
    fn executions_fall_due() {
        let t = 10 * DAY_MS + 5 * HOUR_MS + 123;
        let hourly = Schedule::Hours { start: 0, every: 1 };
        assert_eq!(next(hourly, 0, t, false), Some(10 * DAY_MS + 6 * HOUR_MS));
        let daily_noon = Schedule::Hours {
            start: 12,
            every: 24,
        };
        assert_eq!(
            next(daily_noon, 0, t, false),
            Some(10 * DAY_MS + 12 * HOUR_MS)
        );
        let every_12_from_17 = Schedule::Hours {
            start: 17,
            every: 12,
        };
        // 17 only (17 + 12 = 29 is the next day's 5, which is before 17): once a day.
        assert_eq!(
            next(every_12_from_17, 0, 10 * DAY_MS + 18 * HOUR_MS, false),
            Some(11 * DAY_MS + 17 * HOUR_MS)
        );
        assert_eq!(next(Schedule::Rate(5000), 1000, 1000, false), Some(6000));
        assert_eq!(next(Schedule::Rate(5000), 1000, 6000, false), Some(11_000));
        assert_eq!(next(Schedule::Now, 1000, 5000, false), Some(1000));
        assert_eq!(next(Schedule::Now, 1000, 5000, true), None);
    }
}
