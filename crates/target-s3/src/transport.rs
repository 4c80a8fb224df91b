//! The HTTP transport under the S3 operator: opendal's own (reqwest), with
//! one repair. opendal sends a request with an empty body without a
//! `Content-Length`, and Ceph's RADOS Gateway (Debian's 16.2, the one the
//! tests run) refuses such an UploadPartCopy with 411
//! `MissingContentLength`: every server-side copy would fail, and each
//! night's upload would go in full. An empty PUT or POST gets
//! `Content-Length: 0`, as other S3 clients send it; nothing else changes.

use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Result};

pub(crate) struct Transport(pub(crate) HttpTransporter);

impl HttpTransport for Transport {
    async fn fetch(&self, mut req: http::Request<Buffer>) -> Result<http::Response<HttpBody>> {
        let empty_upload = matches!(*req.method(), http::Method::PUT | http::Method::POST)
            && req.body().is_empty();
        if empty_upload && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
            req.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static("0"),
            );
        }
        self.0.fetch(req).await
    }
}
