//! axum's `Json` and `Query` with their rejections turned into problem documents: a body
//! that is not JSON is 400, JSON of the wrong shape (unknown field, wrong type) is 422, a
//! body that is not `application/json` is 415. A query parameter the route does not take,
//! or one given twice, is 400 naming it; a value of the wrong type is 422 naming its field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::invalid("body", e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::UnsupportedType("the body must be application/json".to_string())
                }
                other => ApiError::BadRequest(other.body_text()),
            }),
        }
    }
}

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// A route that takes no query parameters says so, rather than ignoring a misspelt one.
pub struct NoQuery;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query::<Nothing>(parts.uri.query().unwrap_or("")).map(|_| NoQuery)
    }
}

/// The query string as `T`, with serde's messages put in the API's words.
fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    for (i, (key, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(earlier, _)| earlier == key) {
            return Err(ApiError::BadRequest(format!(
                "the query parameter `{key}` is given more than once"
            )));
        }
    }
    serde_urlencoded::from_str(query).map_err(|err| {
        let message = err.to_string();
        if let Some(rest) = message.strip_prefix("unknown field ") {
            // serde: "`x`, expected one of `a`, `b`", "`x`, expected `a`", "`x`, there are no fields"
            let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
            let takes = match expected
                .strip_prefix("expected one of ")
                .or_else(|| expected.strip_prefix("expected "))
            {
                Some(list) => format!("it takes {}", list.replace(" or ", ", ")),
                None => "it takes none".to_string(),
            };
            return ApiError::BadRequest(format!(
                "{name} is not a query parameter of this route: {takes}"
            ));
        }
        // serde_urlencoded does not say which field a bad value belongs to: each pair alone
        // tells (every field is optional).
        for (key, value) in &pairs {
            let single = form_urlencoded::Serializer::new(String::new())
                .append_pair(key, value)
                .finish();
            if let Err(err) = serde_urlencoded::from_str::<T>(&single) {
                return ApiError::invalid(key, value_in_words(&err.to_string()));
            }
        }
        ApiError::BadRequest(format!("the query string is not valid: {message}"))
    })
}

fn value_in_words(serde_message: &str) -> String {
    if serde_message.contains("integer") || serde_message.contains("digit") {
        "must be a whole number".to_string()
    } else if serde_message.contains("too large") || serde_message.contains("too small") {
        "is out of range".to_string()
    } else if serde_message.contains("bool") {
        "must be true or false".to_string()
    } else {
        serde_message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        wait: Option<u32>,
        status: Option<String>,
    }

    fn detail(err: ApiError) -> (u16, String) {
        (err.status().as_u16(), err.to_string())
    }

    #[test]
    fn query_mistakes_are_answered_in_words() {
        assert!(parse_query::<Params>("wait=5&status=ready").is_ok());
        assert!(parse_query::<Params>("").is_ok());
        let (status, text) = detail(parse_query::<Params>("wiat=5").unwrap_err());
        assert_eq!(status, 400);
        assert!(
            text.contains(
                "`wiat` is not a query parameter of this route: it takes `wait`, `status`"
            ),
            "{text}"
        );
        let (status, text) = detail(parse_query::<Nothing>("x=1").unwrap_err());
        assert_eq!(status, 400);
        assert!(text.contains("it takes none"), "{text}");
        let (status, text) = detail(parse_query::<Params>("wait=").unwrap_err());
        assert_eq!(status, 422);
        assert!(
            text.contains("wait") && text.contains("whole number"),
            "{text}"
        );
        let (status, text) = detail(parse_query::<Params>("status=a&wait=ten").unwrap_err());
        assert_eq!(status, 422);
        assert!(text.contains("wait: must be a whole number"), "{text}");
        let (status, text) = detail(parse_query::<Params>("wait=1&wait=2").unwrap_err());
        assert_eq!(status, 400);
        assert!(text.contains("`wait` is given more than once"), "{text}");
    }
}
