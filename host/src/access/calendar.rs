//! Calendar periods in UTC (a day, an ISO week from Monday, a month) as
//! Unix milliseconds, by Howard Hinnant's civil-date algorithms.

use super::Period;

const DAY_MS: i64 = 86_400_000;

/// The period containing `at_ms`: its first and one-past-last millisecond.
pub fn bounds(period: Period, at_ms: i64) -> (i64, i64) {
    let day = at_ms.div_euclid(DAY_MS);
    match period {
        Period::Day => (day * DAY_MS, (day + 1) * DAY_MS),
        Period::Week => {
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            let monday = day - (day + 3).rem_euclid(7);
            (monday * DAY_MS, (monday + 7) * DAY_MS)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1) * DAY_MS,
                days_from_civil(ny, nm, 1) * DAY_MS,
            )
        }
    }
}

/// `2026-12-03T00:00:00Z`.
pub fn format(at_ms: i64) -> String {
    let day = at_ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(day);
    let seconds = at_ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn dates_round_trip_and_know_leap_years() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(civil_from_days(days_from_civil(2026, 12, 1)), (2026, 12, 1));
        assert_eq!(days_from_civil(2025, 3, 1) - days_from_civil(2025, 2, 1), 28);
        assert_eq!(format(ms(2026, 12, 3) + 3_723_000), "2026-12-03T01:02:03Z");
    }

    #[test]
    fn periods_are_calendar_periods_in_utc() {
        // Tuesday 2026-12-01, 15:00 UTC.
        let now = ms(2026, 12, 1) + 15 * 3_600_000;
        assert_eq!(bounds(Period::Day, now), (ms(2026, 12, 1), ms(2026, 12, 2)));
        assert_eq!(bounds(Period::Week, now), (ms(2026, 11, 30), ms(2026, 12, 7)));
        assert_eq!(bounds(Period::Month, now), (ms(2026, 12, 1), ms(2027, 1, 1)));
        assert_eq!(
            bounds(Period::Month, ms(2024, 2, 29)),
            (ms(2024, 2, 1), ms(2024, 3, 1))
        );
        // The last millisecond of a period is in it; the next one is not.
        assert_eq!(bounds(Period::Day, ms(2026, 12, 2) - 1).0, ms(2026, 12, 1));
    }
}
