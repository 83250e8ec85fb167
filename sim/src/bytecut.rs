//! Where each `import_data` row ends in the raw request body, for the 4 MB cut (see `import.rs`).

/// Byte offsets just past each element of the top-level `import_data` array. `body` must be
/// valid JSON (it was parsed before).
pub fn row_ends(body: &[u8]) -> Option<Vec<usize>> {
    let ws = |mut i: usize| {
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let string_end = |mut i: usize| {
        i += 1;
        while i < body.len() {
            match body[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    };
    let value_end = |i: usize| -> Option<usize> {
        match *body.get(i)? {
            b'"' => string_end(i),
            b'{' | b'[' => {
                let (mut depth, mut j) = (0usize, i);
                while j < body.len() {
                    match body[j] {
                        b'"' => {
                            j = string_end(j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let mut j = i;
                while j < body.len()
                    && !matches!(body[j], b',' | b'}' | b']')
                    && !body[j].is_ascii_whitespace()
                {
                    j += 1;
                }
                Some(j)
            }
        }
    };
    let mut i = ws(0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = ws(i);
        if *body.get(i)? == b'}' {
            return None;
        }
        let kend = string_end(i)?;
        let key = &body[i + 1..kend - 1];
        i = ws(kend) + 1; // past ':'
        i = ws(i);
        if key == b"import_data" && body.get(i) == Some(&b'[') {
            let mut ends = Vec::new();
            i += 1;
            loop {
                i = ws(i);
                if *body.get(i)? == b']' {
                    return Some(ends);
                }
                let e = value_end(i)?;
                ends.push(e);
                i = ws(e);
                if body.get(i) == Some(&b',') {
                    i += 1;
                }
            }
        }
        i = ws(value_end(i)?);
        if body.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::row_ends;

    #[test]
    fn row_ends_finds_each_element_whatever_the_key_order() {
        let body = br#" {"list_ids": ["a]}"], "import_data" : [ {"email":"x\"}@e.com"}, {"a":[1,{"b":2}]} ,{}], "z": 1}"#;
        let ends = row_ends(body).unwrap();
        assert_eq!(ends.len(), 3);
        assert_eq!(&body[ends[0] - 1..ends[0]], b"}");
        let text = std::str::from_utf8(body).unwrap();
        assert_eq!(ends[2], text.find("{}]").unwrap() + 2);
    }
}
