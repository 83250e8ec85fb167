//! Calls on the account's lists and custom fields, and the cheap probe.

use super::*;

impl Api {
    /// `GET /contact_lists`: the ids of every list the account has (following `_links.next`,
    /// 1,000 a page, CC's maximum; reference §5.6). One request for nearly every account.
    pub(crate) async fn lists(&self, token: &AccessToken) -> Result<HashSet<Uuid>, CcError> {
        let mut out = HashSet::new();
        let mut url = format!("{}/contact_lists?limit=1000", self.base);
        for _ in 0..20 {
            let req = self.http.get(&url).bearer_auth(token.expose());
            let v: Value = self.send(Endpoint::ContactLists, req).await?;
            for l in v
                .get("lists")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = l
                    .get("list_id")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                {
                    out.insert(id);
                }
            }
            match v.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => url = self.absolute(next),
                None => break,
            }
        }
        Ok(out)
    }

    /// The cheapest call that tells whether CC answers this account (`GET /contact_lists?limit=1`):
    /// the probe of an outage or `forbidden` pause.
    pub(crate) async fn probe(&self, token: &AccessToken) -> Result<(), CcError> {
        let url = format!("{}/contact_lists?limit=1", self.base);
        let req = self.http.get(url).bearer_auth(token.expose());
        let _: Value = self.send(Endpoint::ContactLists, req).await?;
        Ok(())
    }

    /// `GET /contact_custom_fields`: every custom field's name → id (following `_links.next`).
    pub(crate) async fn custom_fields(
        &self,
        token: &AccessToken,
    ) -> Result<HashMap<String, String>, CcError> {
        let mut out = HashMap::new();
        let mut url = format!("{}/contact_custom_fields?limit=100", self.base);
        // CC caps an account at 100 custom fields, so two pages at most; bound the loop anyway.
        for _ in 0..10 {
            let req = self.http.get(&url).bearer_auth(token.expose());
            let v: Value = self.send(Endpoint::ContactCustomFields, req).await?;
            for f in v
                .get("custom_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(name), Some(id)) = (
                    f.get("name").and_then(Value::as_str),
                    f.get("custom_field_id").and_then(Value::as_str),
                ) {
                    out.insert(name.to_string(), id.to_string());
                }
            }
            match v.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => url = self.absolute(next),
                None => break,
            }
        }
        Ok(out)
    }

    /// `POST /contact_custom_fields` with the name as label (CC derives the name from the label by
    /// replacing blanks with underscores); returns the new id.
    pub(crate) async fn create_custom_field(
        &self,
        token: &AccessToken,
        name: &str,
    ) -> Result<String, CcError> {
        let url = format!("{}/contact_custom_fields", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "label": name, "type": "string" }));
        let v: Value = self.send(Endpoint::ContactCustomFields, req).await?;
        v.get("custom_field_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CcError::Unexpected {
                status: 201,
                detail: "custom field answer without custom_field_id".into(),
            })
    }
}
