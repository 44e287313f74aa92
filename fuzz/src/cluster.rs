//! The JSON a node reads from NATS: room events from the stream, presence records, private
//! messages and their replies, operator notices, the KV buckets' values and keys.

/// Any bytes as every kind of cluster payload (`chatao_server::cluster::decode_wire`): no
/// panic, and whatever decodes decodes again from its own encoding.
pub fn cluster(data: &[u8]) {
    if let Err(kind) = chatao_server::cluster::decode_wire(data) {
        panic!("a decoded {kind} does not decode from its own encoding");
    }
}
