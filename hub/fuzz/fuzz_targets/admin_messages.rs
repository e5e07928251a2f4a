//! Every admin request message the hub accepts, decoded from arbitrary bytes; apply documents
//! go on to the resource parser. Must never panic.
#![no_main]

use gitfleet_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::ApplyRequest::decode(data) {
        for d in req.documents.iter().take(64) {
            let _ = gitfleet_hub::resources::parse_document(&d.origin, &d.json);
        }
    }
    let _ = pb::DeleteRequest::decode(data);
    let _ = pb::GetRequest::decode(data);
    let _ = pb::StatusRequest::decode(data);
    let _ = pb::CreateTokenRequest::decode(data);
    let _ = pb::RollbackRequest::decode(data);
    let _ = pb::AppControlRequest::decode(data);
    let _ = pb::ListEventsRequest::decode(data);
    let _ = pb::ApproveClusterRequest::decode(data);
    let _ = pb::RevokeTokenRequest::decode(data);
});
