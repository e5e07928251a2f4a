//! Everything a spoke sends on its link (and registers with): arbitrary bytes decoded as the
//! protobuf messages, then converted to the hub's domain types as the gRPC adapter does. Must
//! never panic.
#![no_main]

use gitfleet_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = pb::SpokeMessage::decode(data)
        && let Some(pb::spoke_message::Msg::Status(report)) = m.msg
    {
        let _ = gitfleet_hub::grpc::convert::target_report(report);
    }
    if let Ok(r) = pb::RegisterRequest::decode(data) {
        let _ = gitfleet_hub::grpc::convert::registration(r);
    }
    let _ = pb::Hello::decode(data);
    let _ = pb::RenewRequest::decode(data);
});
