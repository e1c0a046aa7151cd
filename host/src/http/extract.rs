//! axum's `Path` and `Query` extractors, with their rejections answered as
//! problems: a path segment that is not UTF-8 once decoded, an id that is
//! not a number, an unknown or repeated query parameter are `400`
//! problem+json documents like every other error, not axum's plain text.

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::Problem;

/// The path's parameters, as [`axum::extract::Path`] reads them.
pub(super) struct Path<T>(pub T);

/// The query's parameters, as [`axum::extract::Query`] reads them.
pub(super) struct Query<T>(pub T);

fn invalid(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid parameter",
        detail,
    )
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(invalid(rejection.body_text())),
        }
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(invalid(rejection.body_text())),
        }
    }
}
