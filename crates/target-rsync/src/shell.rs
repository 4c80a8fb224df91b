//! The remote shell command (`MSS_BACKUP_RSYNC_RSH`, like rsync's own
//! `RSYNC_RSH`) as words, and back. The same string must mean the same argv
//! when we run `ssh` ourselves and when rsync runs it from `-e`, so it is
//! split by rsync's rules: words separated by spaces, `'…'` and `"…"`
//! quote, a doubled quote inside quotes is a literal one, no backslash
//! escapes, no shell (`$VAR` and `~` are passed as written; ssh expands `~`
//! in `-i` itself).

/// Splits a remote shell command into words the way rsync does.
pub fn split(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = command.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match quote {
                None if c.is_ascii_whitespace() => break,
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => {
                    if chars.next_if_eq(&q).is_some() {
                        word.push(q);
                    } else {
                        quote = None;
                    }
                }
                _ => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("it has an unclosed {q} quote"));
        }
        words.push(word);
    }
    if words.is_empty() {
        return Err("it is empty".to_string());
    }
    Ok(words)
}

/// Joins words into one string that rsync's `-e` splits back into them.
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && !w.contains(|c: char| c.is_ascii_whitespace() || c == '\'' || c == '"')
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for the remote POSIX shell that ssh hands commands to.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_like_rsync() {
        assert_eq!(
            split("ssh -p 2222  -i ~/.ssh/mss_backup").unwrap(),
            words(&["ssh", "-p", "2222", "-i", "~/.ssh/mss_backup"])
        );
        assert_eq!(
            split(r#"ssh -i '/keys/my key' -o "ProxyJump=a b" -o 'x''y'"#).unwrap(),
            words(&[
                "ssh",
                "-i",
                "/keys/my key",
                "-o",
                "ProxyJump=a b",
                "-o",
                "x'y"
            ])
        );
        assert!(split("ssh -i 'open").is_err());
        assert!(split("   ").is_err());
    }

    #[test]
    fn join_round_trips() {
        for list in [
            words(&["ssh", "-p", "22"]),
            words(&["/opt/my ssh", "-o", "A='b'", "", "q\"q"]),
        ] {
            assert_eq!(split(&join(&list)).unwrap(), list, "{}", join(&list));
        }
    }

    #[test]
    fn sh_quote_survives_quotes() {
        assert_eq!(sh_quote("/srv/it's"), r"'/srv/it'\''s'");
    }
}
