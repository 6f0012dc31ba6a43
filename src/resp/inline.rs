//! Inline commands (`SET a 1\r\n`, as typed into telnet), split into arguments
//! with the rules of Redis's `sdssplitargs`: whitespace separates, double
//! quotes understand `\n \r \t \b \a \\ \"` and `\xHH`, single quotes only
//! `\'`, and a closing quote must be followed by whitespace or the end.
//! (A NUL byte never reaches here: see the parser's inline state.)

/// The arguments of one inline line, or `None` for unbalanced quotes.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let Some(&c) = line.get(i) else {
                if in_double || in_single {
                    return None;
                }
                break;
            };
            if in_double {
                if c == b'\\' && line.get(i + 1) == Some(&b'x') && is_hex_pair(line, i + 2) {
                    current.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    current.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if line.get(i + 1).is_some_and(|&next| !is_space(next)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    current.push(b'\'');
                    i += 1;
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&next| !is_space(next)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    current.push(c);
                }
            } else if ends_word(c) {
                break;
            } else if c == b'"' {
                in_double = true;
            } else if c == b'\'' {
                in_single = true;
            } else {
                current.push(c);
            }
            i += 1;
        }
        args.push(current);
    }
}

/// What ends an unquoted word in `sdssplitargs` (not `\v` or `\f`, which
/// only count as space between words).
fn ends_word(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// C's `isspace` in the "C" locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_hex_pair(line: &[u8], at: usize) -> bool {
    line.get(at).is_some_and(u8::is_ascii_hexdigit) && line.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::split_args;

    fn split(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes()).map(|args| args.into_iter().map(|a| String::from_utf8_lossy(&a).into()).collect())
    }

    #[test]
    fn words_and_quotes_split_like_sdssplitargs() {
        assert_eq!(split("set a 1"), Some(vec!["set".into(), "a".into(), "1".into()]));
        assert_eq!(split("  ping  "), Some(vec!["ping".into()]));
        assert_eq!(split(""), Some(vec![]));
        assert_eq!(split(r#"set "a b" 'c d'"#), Some(vec!["set".into(), "a b".into(), "c d".into()]));
        assert_eq!(split(r#"echo "x\ny\x41""#), Some(vec!["echo".into(), "x\nyA".into()]));
        assert_eq!(split(r"echo 'it\'s'"), Some(vec!["echo".into(), "it's".into()]));
        assert_eq!(split(r#"echo a"b c""#), Some(vec!["echo".into(), "ab c".into()]));
        assert_eq!(split(r#"echo """#), Some(vec!["echo".into(), "".into()]));
    }

    #[test]
    fn only_some_spaces_end_a_word() {
        assert_eq!(split("get a\x0bb"), Some(vec!["get".into(), "a\x0bb".into()]));
        assert_eq!(split("\x0b\x0cget a"), Some(vec!["get".into(), "a".into()]));
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        assert_eq!(split(r#"set "a"#), None);
        assert_eq!(split("set 'a"), None);
        assert_eq!(split(r#"set "a"b"#), None);
        assert_eq!(split("set 'a'b"), None);
    }
}
