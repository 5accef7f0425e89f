use axum::http::HeaderValue;

use super::edge::{new_request_id, valid_request_id};

#[test]
fn request_ids_are_checked() {
    assert!(valid_request_id(&HeaderValue::from_static("abc-123")).is_ok());
    assert!(valid_request_id(&HeaderValue::from_static("has space")).is_err());
    let long = "x".repeat(129);
    assert!(valid_request_id(&HeaderValue::from_str(&long).expect("ascii")).is_err());
    assert!(valid_request_id(&new_request_id()).is_ok());
}
