//! Alertmanager's label matchers: `name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"`. A label that is absent matches as the
//! empty string, and a regex must match the whole value, as in
//! Alertmanager. The host matches silences with them and
//! `rule-alert-route` its routes, so both read a matcher the same way.

use regex_lite::Regex;

/// Labels as `(name, value)` pairs.
pub type Labels = [(String, String)];

/// One parsed matcher.
#[derive(Debug)]
pub struct Matcher {
    name: String,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
}

impl Matcher {
    /// Parse `text` (the value may be double-quoted, with `\"`, `\\` and
    /// `\n` escapes, or bare).
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        let end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("`{text}` has no operator"))?;
        let name = &text[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("`{text}`: `{name}` is not a label name"));
        }
        let rest = text[end..].trim_start();
        let (op, value) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (op, v)))
            .ok_or_else(|| format!("`{text}`: expected =, !=, =~ or !~ after `{name}`"))?;
        let value = unquote(value.trim()).map_err(|e| format!("`{text}`: {e}"))?;
        let regex = |v: &str| {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("`{text}`: bad regex: {e}"))
        };
        let op = match op {
            "=" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            "=~" => Op::Matches(regex(&value)?),
            _ => Op::NotMatches(regex(&value)?),
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
        })
    }

    /// Whether `labels` satisfy it.
    /// The label it reads.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels
            .iter()
            .find(|(k, _)| *k == self.name)
            .map_or("", |(_, v)| v.as_str());
        match &self.op {
            Op::Equal(v) => value == v,
            Op::NotEqual(v) => value != v,
            Op::Matches(r) => r.is_match(value),
            Op::NotMatches(r) => !r.is_match(value),
        }
    }
}

fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err("unbalanced quote".into());
        }
        return Ok(v.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| "unterminated quote".to_owned())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(e @ ('"' | '\\')) => out.push(e),
                other => return Err(format!("unknown escape `\\{}`", other.unwrap_or(' '))),
            },
            '"' => return Err("unescaped quote inside the value".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_four_operators() {
        let l = labels(&[("alertname", "HighCPU"), ("severity", "critical")]);
        for (m, want) in [
            (r#"alertname="HighCPU""#, true),
            (r#"alertname = "LowCPU""#, false),
            (r#"alertname!="LowCPU""#, true),
            (r#"alertname=~"High.*|Low.*""#, true),
            (r#"alertname=~"High""#, false), // anchored: the whole value
            (r#"severity!~"info|warning""#, true),
            ("severity=critical", true),
            (r#"team="""#, true), // absent is the empty string
            (r#"team!="""#, false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
        }
    }

    #[test]
    fn escapes_and_errors() {
        let l = labels(&[("msg", "say \"hi\"\\")]);
        assert!(Matcher::parse(r#"msg="say \"hi\"\\""#).unwrap().matches(&l));
        for bad in [
            "alertname",
            r#"="x""#,
            r#"1a="x""#,
            r#"a=="x""#,
            r#"a="x"#,
            r#"a=~"(""#,
            r#"a="\q""#,
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }
}
