//! axum's `Path`, `Query` and body extractors, with their rejections
//! answered as problems: a path segment that is not UTF-8 once decoded, an
//! id that is not a number, an unknown or repeated query parameter, a body
//! over the limit are problem+json documents like every other error, not
//! axum's plain text.

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

/// The request body, read whole within the route's `DefaultBodyLimit`:
/// past it a `413` problem, and a body that cannot be read a `400` one.
pub(super) struct Body(pub bytes::Bytes);

impl<S> axum::extract::FromRequest<S> for Body
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match bytes::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Body too large",
                    "the body is over the limit of max_body_size",
                ))
            }
            Err(_) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                "Unreadable body",
                "the request body could not be read to its end",
            )),
        }
    }
}
