//! Nix's `--log-format internal-json` records: `@nix {...}` lines, as
//! nix-output-monitor and Nix itself (reading a builder's or a remote's
//! stderr) consume them.
//!
//! Shape, checked against Nix 2.8's own output: keys in alphabetical order
//! (Nix serialises through an ordered map), no spaces, non-ASCII left as
//! UTF-8, control characters escaped as `\b \t \n \f \r` or `\u00xx`
//! (lower-case hex); `fields` is omitted when empty. Current Nix adds
//! `"parent"` to start records; Nix 2.8 does not ([`JsonDialect`]).

use std::io::Write;
use std::sync::Mutex;

use super::{ActivityId, ActivityType, Field, LogSink, ResultType, Verbosity};

/// Which Nix's start records to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonDialect {
    /// Current Nix: start records carry `"parent"`.
    #[default]
    Current,
    /// Nix 2.8: no `"parent"`.
    Nix28,
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_fields(out: &mut String, fields: &[Field]) {
    if fields.is_empty() {
        return;
    }
    out.push_str(",\"fields\":[");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match f {
            Field::Int(n) => out.push_str(&n.to_string()),
            Field::Str(s) => push_str(out, s),
        }
    }
    out.push(']');
}

/// `{"action":"start",...}` (without the `@nix ` prefix).
pub(crate) fn start_json(
    dialect: JsonDialect,
    id: ActivityId,
    level: Verbosity,
    ty: ActivityType,
    text: &str,
    fields: &[Field],
    parent: ActivityId,
) -> String {
    let mut o = String::from("{\"action\":\"start\"");
    push_fields(&mut o, fields);
    o.push_str(&format!(",\"id\":{id},\"level\":{}", level.code()));
    if dialect == JsonDialect::Current {
        o.push_str(&format!(",\"parent\":{parent}"));
    }
    o.push_str(",\"text\":");
    push_str(&mut o, text);
    o.push_str(&format!(",\"type\":{}}}", ty.code()));
    o
}

pub(crate) fn stop_json(id: ActivityId) -> String {
    format!("{{\"action\":\"stop\",\"id\":{id}}}")
}

pub(crate) fn result_json(id: ActivityId, ty: ResultType, fields: &[Field]) -> String {
    let mut o = String::from("{\"action\":\"result\"");
    push_fields(&mut o, fields);
    o.push_str(&format!(",\"id\":{id},\"type\":{}}}", ty.code()));
    o
}

pub(crate) fn msg_json(level: Verbosity, msg: &str) -> String {
    let mut o = format!("{{\"action\":\"msg\",\"level\":{},\"msg\":", level.code());
    push_str(&mut o, msg);
    o.push('}');
    o
}

/// An error message as Nix's `logEI` writes it (no source position).
pub(crate) fn error_json(level: Verbosity, msg: &str, raw_msg: &str) -> String {
    let mut o = format!(
        "{{\"action\":\"msg\",\"column\":null,\"file\":null,\"level\":{},\"line\":null,\"msg\":",
        level.code()
    );
    push_str(&mut o, msg);
    o.push_str(",\"raw_msg\":");
    push_str(&mut o, raw_msg);
    o.push('}');
    o
}

/// Writes `@nix {...}` lines; each record is one `write_all` under a lock, so
/// lines from different threads never interleave. Write errors are ignored
/// (logging must not abort work), as Nix's JSON logger does after a failure.
pub struct JsonSink<W: Write + Send> {
    out: Mutex<W>,
    dialect: JsonDialect,
}

impl<W: Write + Send> JsonSink<W> {
    pub fn new(out: W, dialect: JsonDialect) -> JsonSink<W> {
        JsonSink {
            out: Mutex::new(out),
            dialect,
        }
    }

    /// The writer back (tests read what was written).
    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self, json: String) {
        let line = format!("@nix {json}\n");
        let mut g = match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = g.write_all(line.as_bytes());
        let _ = g.flush();
    }
}

impl<W: Write + Send> LogSink for JsonSink<W> {
    fn start(
        &self,
        id: ActivityId,
        level: Verbosity,
        ty: ActivityType,
        text: &str,
        fields: &[Field],
        parent: ActivityId,
    ) {
        self.write(start_json(
            self.dialect,
            id,
            level,
            ty,
            text,
            fields,
            parent,
        ));
    }
    fn stop(&self, id: ActivityId) {
        self.write(stop_json(id));
    }
    fn result(&self, id: ActivityId, ty: ResultType, fields: &[Field]) {
        self.write(result_json(id, ty, fields));
    }
    fn log(&self, level: Verbosity, msg: &str) {
        self.write(msg_json(level, msg));
    }
    fn error(&self, level: Verbosity, msg: &str, raw_msg: &str) {
        self.write(error_json(level, msg, raw_msg));
    }
}

/// One parsed `@nix` record (from a builder's stderr, or another b3/Nix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonMessage {
    Start {
        id: ActivityId,
        level: Verbosity,
        ty: ActivityType,
        text: String,
        fields: Vec<Field>,
        parent: ActivityId,
    },
    Stop {
        id: ActivityId,
    },
    Result {
        id: ActivityId,
        ty: ResultType,
        fields: Vec<Field>,
    },
    Msg {
        level: Verbosity,
        msg: String,
    },
    /// `{"action":"setPhase","phase":...}`, which stdenv's builder prints.
    SetPhase {
        phase: String,
    },
}

/// A line that starts with `@nix ` but is not a record Nix would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad JSON log message: {0}")]
pub struct JsonParseError(pub String);

/// Parses a log line: `None` if it is not an `@nix ` line at all.
/// Unknown extra keys are ignored, as Nix ignores them.
pub fn parse_json_line(line: &str) -> Option<Result<JsonMessage, JsonParseError>> {
    let body = line.strip_prefix("@nix ")?;
    Some(parse_body(body))
}

fn parse_body(body: &str) -> Result<JsonMessage, JsonParseError> {
    let err = |m: &str| JsonParseError(m.to_owned());
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| JsonParseError(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| err("not an object"))?;
    let uint = |k: &str| -> Result<u64, JsonParseError> {
        obj.get(k)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| JsonParseError(format!("missing or non-integer '{k}'")))
    };
    let string = |k: &str| -> Result<String, JsonParseError> {
        obj.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| JsonParseError(format!("missing or non-string '{k}'")))
    };
    let fields = || -> Result<Vec<Field>, JsonParseError> {
        let Some(arr) = obj.get("fields") else {
            return Ok(Vec::new());
        };
        let arr = arr
            .as_array()
            .ok_or_else(|| err("'fields' is not an array"))?;
        arr.iter()
            .map(|f| {
                if let Some(n) = f.as_u64() {
                    Ok(Field::Int(n))
                } else if let Some(s) = f.as_str() {
                    Ok(Field::Str(s.to_owned()))
                } else {
                    Err(err("unsupported field type"))
                }
            })
            .collect()
    };
    match string("action")?.as_str() {
        "start" => {
            let code = uint("type")?;
            Ok(JsonMessage::Start {
                id: uint("id")?,
                level: Verbosity::from_code_clamped(uint("level")?),
                ty: ActivityType::from_code(code)
                    .ok_or_else(|| JsonParseError(format!("unknown activity type {code}")))?,
                text: string("text")?,
                fields: fields()?,
                parent: obj
                    .get("parent")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            })
        }
        "stop" => Ok(JsonMessage::Stop { id: uint("id")? }),
        "result" => {
            let code = uint("type")?;
            Ok(JsonMessage::Result {
                id: uint("id")?,
                ty: ResultType::from_code(code)
                    .ok_or_else(|| JsonParseError(format!("unknown result type {code}")))?,
                fields: fields()?,
            })
        }
        "msg" => Ok(JsonMessage::Msg {
            level: Verbosity::from_code_clamped(uint("level")?),
            msg: string("msg")?,
        }),
        "setPhase" => Ok(JsonMessage::SetPhase {
            phase: string("phase")?,
        }),
        other => Err(JsonParseError(format!("unknown action '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines Nix 2.8 printed for `nix-build --log-format internal-json -v`
    /// of a one-line derivation on this machine (ids are Nix's pid << 32 + n).
    const NIX_28_BUILD: &[&str] = &[
        r#"@nix {"action":"start","id":31035433680897,"level":0,"text":"","type":102}"#,
        r#"@nix {"action":"result","fields":[0,1,0,0],"id":31035433680898,"type":105}"#,
        r#"@nix {"action":"result","fields":[101,0],"id":31035433680897,"type":106}"#,
        r#"@nix {"action":"start","fields":["/nix/store/4dkq2b3qh6jv7cfiw7j5vdl7d36nsz4c-b3-logtest.drv","",1,1],"id":31035433680901,"level":3,"text":"building '/nix/store/4dkq2b3qh6jv7cfiw7j5vdl7d36nsz4c-b3-logtest.drv'","type":105}"#,
        r#"@nix {"action":"result","fields":["hello"],"id":31035433680901,"type":101}"#,
        r#"@nix {"action":"stop","id":31035433680901}"#,
        r#"@nix {"action":"msg","level":3,"msg":"this derivation will be built:"}"#,
        r#"@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\u001b[31;1merror:\u001b[0m builder failed","raw_msg":"builder failed"}"#,
    ];

    fn ours(dialect: JsonDialect) -> Vec<String> {
        let drv = "/nix/store/4dkq2b3qh6jv7cfiw7j5vdl7d36nsz4c-b3-logtest.drv";
        vec![
            start_json(
                dialect,
                31035433680897,
                Verbosity::Error,
                ActivityType::Realise,
                "",
                &[],
                0,
            ),
            result_json(
                31035433680898,
                ResultType::Progress,
                &[0.into(), 1.into(), 0.into(), 0.into()],
            ),
            result_json(
                31035433680897,
                ResultType::SetExpected,
                &[ActivityType::FileTransfer.code().into(), 0.into()],
            ),
            start_json(
                dialect,
                31035433680901,
                Verbosity::Info,
                ActivityType::Build,
                &format!("building '{drv}'"),
                &[drv.into(), "".into(), 1.into(), 1.into()],
                31035433680897,
            ),
            result_json(31035433680901, ResultType::BuildLogLine, &["hello".into()]),
            stop_json(31035433680901),
            msg_json(Verbosity::Info, "this derivation will be built:"),
            error_json(
                Verbosity::Error,
                "\u{1b}[31;1merror:\u{1b}[0m builder failed",
                "builder failed",
            ),
        ]
        .into_iter()
        .map(|j| format!("@nix {j}"))
        .collect()
    }

    #[test]
    fn nix28_dialect_is_byte_identical_to_nix_28() {
        assert_eq!(ours(JsonDialect::Nix28), NIX_28_BUILD);
    }

    #[test]
    fn current_dialect_adds_parent_in_key_order() {
        let got = ours(JsonDialect::Current);
        assert_eq!(
            got[3],
            NIX_28_BUILD[3].replace(",\"text\"", ",\"parent\":31035433680897,\"text\"")
        );
        assert_eq!(
            got[0],
            NIX_28_BUILD[0].replace(",\"text\"", ",\"parent\":0,\"text\"")
        );
        assert_eq!(got[1..3], NIX_28_BUILD[1..3]);
    }

    #[test]
    fn escaping_matches_nlohmann() {
        let s = msg_json(Verbosity::Info, "q\"b\\\u{1}\u{7f}\té\u{8}\u{c}\r\n");
        assert_eq!(
            s,
            "{\"action\":\"msg\",\"level\":3,\"msg\":\"q\\\"b\\\\\\u0001\u{7f}\\té\\b\\f\\r\\n\"}"
        );
        // And serde_json reads it back to the same string.
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["msg"], "q\"b\\\u{1}\u{7f}\té\u{8}\u{c}\r\n");
    }

    #[test]
    fn parses_what_nix_prints_and_round_trips() {
        for line in NIX_28_BUILD {
            let m = parse_json_line(line).unwrap().unwrap();
            let back = match &m {
                JsonMessage::Start {
                    id,
                    level,
                    ty,
                    text,
                    fields,
                    parent,
                } => start_json(JsonDialect::Nix28, *id, *level, *ty, text, fields, *parent),
                JsonMessage::Stop { id } => stop_json(*id),
                JsonMessage::Result { id, ty, fields } => result_json(*id, *ty, fields),
                JsonMessage::Msg { level, msg } if line.contains("raw_msg") => {
                    error_json(*level, msg, "builder failed")
                }
                JsonMessage::Msg { level, msg } => msg_json(*level, msg),
                JsonMessage::SetPhase { .. } => unreachable!(),
            };
            assert_eq!(format!("@nix {back}"), *line);
        }
        assert_eq!(
            parse_json_line(r#"@nix {"action":"setPhase","phase":"unpackPhase"}"#),
            Some(Ok(JsonMessage::SetPhase {
                phase: "unpackPhase".into()
            }))
        );
        assert!(parse_json_line("plain output").is_none());
        assert!(parse_json_line("@nix {").unwrap().is_err());
        assert!(
            parse_json_line(r#"@nix {"action":"start","id":1,"level":0,"text":"","type":99}"#)
                .unwrap()
                .is_err()
        );
    }
}
