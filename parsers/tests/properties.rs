//! Property tests: IEM lines generated in every producer shape and header shape parse back to
//! what was generated; arbitrary text never panics.

use iem_parsers::iem::{Classified, Field, Severity, Source};
use iem_parsers::syslog::Format;
use iem_parsers::{journal, parse_syslog_line};
use proptest::prelude::*;

/// One generated IEM and the expected parse.
#[derive(Debug, Clone)]
struct Case {
    canonical: String,
    message: String,
    count: Option<u64>,
    description: String,
    extra: Option<String>,
    program: String,
    pid: String,
}

fn cased(s: &str, upper: &[bool]) -> String {
    s.chars()
        .zip(upper.iter().cycle())
        .map(|(c, &u)| {
            if u {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn code() -> impl Strategy<Value = (String, String)> {
    (
        0..Severity::ALL.len(),
        0..Source::ALL.len(),
        Field::Component.range(),
        Field::Module.range(),
        Field::Event.range(),
        prop::collection::vec(any::<bool>(), 12),
    )
        .prop_map(|(sev, src, comp, module, event, upper)| {
            let canonical = format!(
                "{}{}{comp:03x}{module:03x}{event:04x}",
                Severity::ALL[sev].letter(),
                Source::ALL[src].letter()
            );
            (cased(&canonical, &upper), canonical)
        })
}

/// A JSON object whose string values hold braces and escaped quotes.
fn json_extra() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z]{1,6}", r#"[a-z {}\[\]]{0,8}"#, any::<bool>()), 1..4).prop_map(
        |members| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v, quote)| {
                    if *quote {
                        format!(r#""{k}": "{v}\"""#)
                    } else {
                        format!(r#""{k}": {}"#, v.len())
                    }
                })
                .collect();
            format!("{{ {} }}", body.join(", "))
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        code(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(any::<u64>()),
        "([A-Za-z0-9]([A-Za-z0-9 .,=()_:-]{0,40}[A-Za-z0-9.])?)?",
        prop::option::of((json_extra(), any::<bool>())),
        "[a-z][a-z0-9_./()-]{0,15}",
        "[1-9][0-9]{0,6}",
        "(prefix text )?",
    )
        .prop_map(
            |(
                (written, canonical),
                space1,
                space2,
                count,
                description,
                extra,
                program,
                pid,
                prefix,
            )| {
                let mut message = format!(
                    "{prefix}IEC:{}{written}:{}",
                    if space1 { " " } else { "" },
                    if space2 { " " } else { "" }
                );
                if let Some(n) = count {
                    message += &format!("Event count: {n:x}, ");
                }
                message += &description;
                if let Some((json, colon)) = &extra {
                    message += if *colon { ": " } else { " " };
                    message += json;
                }
                Case {
                    canonical,
                    message,
                    count,
                    description,
                    extra: extra.map(|(json, _)| json),
                    program,
                    pid,
                }
            },
        )
}

fn check_iem(case: &Case, classified: &Classified<'_>) -> Result<(), TestCaseError> {
    let Classified::Iem(iem) = classified else {
        return Err(TestCaseError::fail(format!("not an IEM: {classified:?}")));
    };
    prop_assert_eq!(iem.code.to_string(), case.canonical.clone());
    prop_assert_eq!(iem.count, case.count);
    prop_assert_eq!(iem.description, case.description.as_str());
    prop_assert_eq!(iem.extra, case.extra.as_deref());
    Ok(())
}

fn json_escape(s: &str, unicode: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if unicode && !c.is_ascii_alphanumeric() => {
                out += &format!("\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn iem_round_trips_in_every_header_shape(case in case(), shape in 0..3usize, day in 1u8..=28, sd in any::<bool>()) {
        let (line, format) = match shape {
            0 => (format!("Nov {day:>2} 22:50:01 node1 {}[{}]: {}", case.program, case.pid, case.message), Format::Rfc3164),
            1 => (format!("2026-11-{day:02}T22:50:01.123456+00:00 node1 {}[{}]: {}\r", case.program, case.pid, case.message), Format::Rfc3339),
            _ => (format!(
                "<11>1 2026-11-{day:02}T22:50:01Z node1 {} {} - {} \u{feff}{}",
                case.program,
                case.pid,
                if sd { r#"[x@1 a="q\"\]\\"][y b="2"]"# } else { "-" },
                case.message
            ), Format::Rfc5424),
        };
        let parsed = parse_syslog_line(&line);
        prop_assert_eq!(parsed.header.format, format);
        prop_assert_eq!(parsed.header.program, Some(case.program.as_str()));
        prop_assert_eq!(parsed.header.pid, Some(case.pid.as_str()));
        prop_assert_eq!(parsed.message, case.message.as_str());
        check_iem(&case, &parsed.iem)?;
    }

    #[test]
    fn iem_round_trips_through_journal_json(case in case(), unicode in any::<bool>()) {
        let line = format!(
            r#"{{"__CURSOR":"s=1","MESSAGE":"{}","SYSLOG_IDENTIFIER":"{}","_PID":"{}","PRIORITY":"3","OTHER":[1,{{"a":"}}"}}]}}"#,
            json_escape(&case.message, unicode),
            case.program,
            case.pid
        );
        let entry = journal::parse(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(entry.message.as_ref(), case.message.as_str());
        prop_assert_eq!(entry.identifier.as_deref(), Some(case.program.as_str()));
        prop_assert_eq!(entry.pid.as_deref(), Some(case.pid.as_str()));
        prop_assert_eq!(entry.priority, Some(3));
        check_iem(&case, &iem_parsers::iem::classify(&entry.message))?;
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = parse_syslog_line(&s);
        let _ = journal::parse(&s);
    }

    #[test]
    fn token_soup_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("IEC:"), Just("IEC: "), Just("ES0030010001"), Just("002002000A"), Just(":"), Just(" "),
        Just("{"), Just("}"), Just("\""), Just("\\"), Just("\\u"), Just("d83d"), Just("["), Just("]"),
        Just("<13>"), Just("1 "), Just("-"), Just("Nov  1 22:50:01 "), Just("2026-11-21T22:50:01Z "),
        Just("Event count: "), Just("2a,"), Just("\r"), Just("\0"), Just("é"), Just("\u{feff}"),
        Just("{\"MESSAGE\":"), Just(","), Just("0"),
    ], 0..40)) {
        let s: String = parts.concat();
        let parsed = parse_syslog_line(&s);
        prop_assert!(s.contains(parsed.message));
        let _ = journal::parse(&s);
    }
}
