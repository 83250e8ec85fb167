//! Calls on contacts by email and id: the look-ups, consent changes and the opt-out feed
//! (issue 15).

use super::*;

impl Api {
    /// `GET /contacts?email=…` (CC's default status: every non-deleted contact, reference §5.4):
    /// the contact a consent action applies to, or `None` (unknown, or deleted: a PUT would
    /// revive a deleted contact, reference §5.3).
    pub(crate) async fn contact_record(
        &self,
        token: &AccessToken,
        email: &str,
    ) -> Result<Option<ContactRecord>, CcError> {
        let url = format!("{}/contacts", self.base);
        let req = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .query(&[("email", email)]);
        let v: Value = self.send(Endpoint::Contacts, req).await?;
        let Some(first) = v
            .get("contacts")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        else {
            return Ok(None);
        };
        let text = |p: &str| first.pointer(p).and_then(Value::as_str).map(str::to_string);
        let (Some(contact_id), Some(address)) =
            (text("/contact_id"), text("/email_address/address"))
        else {
            return Err(CcError::Unexpected {
                status: 200,
                detail: "contact without contact_id or email_address".into(),
            });
        };
        let top_level = PUT_TOP_LEVEL
            .iter()
            .filter_map(|k| {
                first
                    .get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        Ok(Some(ContactRecord {
            contact_id,
            address,
            permission: text("/email_address/permission_to_send").unwrap_or_default(),
            top_level,
        }))
    }

    /// `PUT /contacts/{id}` that opts `c` out: the body repeats every top-level property read
    /// (a PUT nulls the ones left out) and leaves the sub-resources out (a PUT keeps those),
    /// `update_source: Account` (the account records the person's wish; CC then shows
    /// `opt_out_source: Account`).
    pub(crate) async fn unsubscribe(
        &self,
        token: &AccessToken,
        c: &ContactRecord,
        reason: Option<&str>,
    ) -> Result<(), CcError> {
        let url = format!("{}/contacts/{}", self.base, urlencode(&c.contact_id));
        let req = self
            .http
            .put(url)
            .bearer_auth(token.expose())
            .json(&unsubscribe_body(c, reason));
        let _: Value = self.send(Endpoint::ContactsPut, req).await?;
        Ok(())
    }

    /// `POST /activities/contact_delete` for up to 500 contact ids.
    pub(crate) async fn delete_contacts(
        &self,
        token: &AccessToken,
        contact_ids: &[String],
    ) -> Result<Created, CcError> {
        let url = format!("{}/activities/contact_delete", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "contact_ids": contact_ids }));
        self.created(Endpoint::ContactDelete, req).await
    }

    /// `POST /activities/remove_list_memberships` of up to 500 contact ids from `lists`.
    pub(crate) async fn remove_from_lists(
        &self,
        token: &AccessToken,
        contact_ids: &[String],
        lists: &[Uuid],
    ) -> Result<Created, CcError> {
        let url = format!("{}/activities/remove_list_memberships", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "source": { "contact_ids": contact_ids }, "list_ids": lists }));
        self.created(Endpoint::RemoveListMemberships, req).await
    }

    /// One page of `GET /contacts?status=unsubscribed&optout_after=SINCE&limit=500` (or the
    /// `next` href of the previous page): contacts that opted out strictly after `since`.
    pub(crate) async fn optouts(
        &self,
        token: &AccessToken,
        since: &str,
        next: Option<&str>,
    ) -> Result<OptOutPage, CcError> {
        let req = match next {
            Some(href) => self.http.get(self.absolute(href)),
            None => self.http.get(format!("{}/contacts", self.base)).query(&[
                ("status", "unsubscribed"),
                ("optout_after", since),
                ("limit", "500"),
            ]),
        }
        .bearer_auth(token.expose());
        let v: Value = self.send(Endpoint::Contacts, req).await?;
        let contacts = v
            .get("contacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let e = c.get("email_address")?;
                let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
                Some(OptOut {
                    email: s("address")?,
                    opt_out_date: s("opt_out_date")?,
                    source: s("opt_out_source"),
                    reason: s("opt_out_reason"),
                })
            })
            .collect();
        Ok(OptOutPage {
            contacts,
            next: v
                .pointer("/_links/next/href")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}
