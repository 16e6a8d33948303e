//! A small HTTP client for the server's pages: a cookie jar, manual
//! redirects, login through the real form (with its hidden `csrf` field),
//! and just enough HTML attribute scanning to find form fields and images.

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct WebSession {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    /// Path (or URL) of the final response after redirects.
    pub url: String,
    pub body: String,
    pub content_type: String,
}

impl WebSession {
    pub fn new(base_url: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            cookies: BTreeMap::new(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `name=value; …` for a Cookie header (also handed to the browser).
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn cookies(&self) -> &BTreeMap<String, String> {
        &self.cookies
    }

    fn abs(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.base)
        } else {
            format!("{}/{path_or_url}", self.base)
        }
    }

    fn absorb(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            let first = s.split(';').next().unwrap_or("");
            if let Some((k, val)) = first.split_once('=') {
                let k = k.trim().to_owned();
                let val = val.trim().to_owned();
                let expired = s.to_ascii_lowercase().contains("max-age=0");
                if val.is_empty() || expired {
                    self.cookies.remove(&k);
                } else {
                    self.cookies.insert(k, val);
                }
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header(COOKIE, self.cookie_header())
        };
        let resp = req.send().await?;
        self.absorb(&resp);
        Ok(resp)
    }

    /// GET following up to 10 redirects.
    pub async fn get(&mut self, path: &str) -> Result<Page> {
        let mut url = self.abs(path);
        for _ in 0..10 {
            let resp = self
                .send(self.client.get(&url))
                .await
                .with_context(|| format!("GET {url}"))?;
            if resp.status().is_redirection() {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| anyhow!("GET {url}: redirect without Location"))?;
                url = self.abs(loc);
                continue;
            }
            return into_page(resp, url).await;
        }
        bail!("GET {path}: too many redirects")
    }

    /// GET without following redirects, returning raw bytes.
    pub async fn get_bytes(&mut self, path: &str) -> Result<(StatusCode, String, Vec<u8>)> {
        let url = self.abs(path);
        let resp = self
            .send(self.client.get(&url))
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let ct = content_type(&resp);
        Ok((status, ct, resp.bytes().await?.to_vec()))
    }

    /// Log in through the real form: GET /login, read its action and hidden
    /// fields (the `csrf` token), POST username/password, follow the
    /// redirect. Fails unless the result is a 2xx page that is not the
    /// login form again.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<Page> {
        let form_page = self.get("/login").await?;
        if !form_page.status.is_success() {
            bail!("GET /login: {}\n{}", form_page.status, form_page.body);
        }
        let form = find_tags(&form_page.body, "form")
            .into_iter()
            .find(|f| {
                f.get("method")
                    .is_some_and(|m| m.eq_ignore_ascii_case("post"))
            })
            .ok_or_else(|| anyhow!("GET /login: no <form method=post>\n{}", form_page.body))?;
        let action = form
            .get("action")
            .cloned()
            .unwrap_or_else(|| "/login".into());
        let mut fields: Vec<(String, String)> = Vec::new();
        for input in find_tags(&form_page.body, "input") {
            let (Some(name), Some(kind)) = (input.get("name"), input.get("type")) else {
                continue;
            };
            if kind.eq_ignore_ascii_case("hidden") {
                fields.push((
                    name.clone(),
                    input.get("value").cloned().unwrap_or_default(),
                ));
            }
        }
        if !fields.iter().any(|(n, _)| n == "csrf") {
            bail!(
                "GET /login: the form has no hidden `csrf` field\n{}",
                form_page.body
            );
        }
        fields.push(("username".into(), username.into()));
        fields.push(("password".into(), password.into()));
        let url = self.abs(&action);
        let resp = self
            .send(self.client.post(&url).form(&fields))
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("/")
                .to_owned();
            let page = self.get(&loc).await?;
            if !page.status.is_success() || page.url.ends_with("/login") {
                bail!(
                    "login did not succeed: ended at {} ({})",
                    page.url,
                    page.status
                );
            }
            return Ok(page);
        }
        let page = into_page(resp, url).await?;
        bail!(
            "POST /login answered {} instead of a redirect\n{}",
            page.status,
            page.body
        )
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn into_page(resp: reqwest::Response, url: String) -> Result<Page> {
    let status = resp.status();
    let ct = content_type(&resp);
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading body of {url}"))?;
    Ok(Page {
        status,
        url,
        body,
        content_type: ct,
    })
}

/// Attributes of every `<tag …>` in `html` (names lower-cased, values with
/// the common entities decoded).
pub fn find_tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{}", tag.to_ascii_lowercase());
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find(&open) {
        let start = pos + i + open.len();
        pos = start;
        // the tag name must end here
        match lower.as_bytes().get(start) {
            Some(b) if b.is_ascii_whitespace() || *b == b'>' || *b == b'/' => {}
            _ => continue,
        }
        let Some(end) = find_tag_end(html, start) else {
            break;
        };
        out.push(parse_attrs(&html[start..end]));
        pos = end;
    }
    out
}

fn find_tag_end(html: &str, from: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, b) in html.as_bytes()[from..].iter().enumerate() {
        match (quote, *b) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"') | (None, b'\'') => quote = Some(*b),
            (None, b'>') => return Some(from + i),
            _ => {}
        }
    }
    None
}

fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = BTreeMap::new();
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ns = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if ns == i {
            break;
        }
        let name = s[ns..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                i += 1;
                let vs = i;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = s[vs..i].to_owned();
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = s[vs..i].to_owned();
            }
        }
        out.insert(name, decode_entities(&value));
    }
    out
}

pub fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&amp;", "&")
}

/// `src` of every `<img>`.
pub fn img_srcs(html: &str) -> Vec<String> {
    find_tags(html, "img")
        .into_iter()
        .filter_map(|a| a.get("src").cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_forms_and_images() {
        let html = r#"<form method="post" action="/login"><input type=hidden name="csrf" value="a&amp;b">
            <input name='username' type="text"><IMG alt="x > y" src="/r/1.png"/><img src=/r/2.png><imgx src="no"></form>"#;
        let inputs = find_tags(html, "input");
        assert_eq!(inputs[0]["name"], "csrf");
        assert_eq!(inputs[0]["value"], "a&b");
        assert_eq!(inputs[1]["type"], "text");
        assert_eq!(img_srcs(html), vec!["/r/1.png", "/r/2.png"]);
        assert_eq!(find_tags(html, "form")[0]["action"], "/login");
    }
}
