//! Small ONNX graphs written directly as protobuf, for tests that need many distinct models:
//! [`iris_like`] has the iris model's signature (input `input` f32 [N,4], output
//! `probabilities` f32 [N,3]) and answers every row with the bias it was made with, so an
//! answer tells which model gave it.

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    fn int(mut self, field: u32, value: i64) -> Self {
        self.key(field, 0);
        self.varint(value as u64);
        self
    }

    fn bytes(mut self, field: u32, bytes: &[u8]) -> Self {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    fn text(self, field: u32, text: &str) -> Self {
        self.bytes(field, text.as_bytes())
    }

    fn message(self, field: u32, message: Message) -> Self {
        self.bytes(field, &message.0)
    }
}

/// `TensorProto`: a float tensor of `dims` named `name`.
fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> Message {
    let mut m = Message::default();
    for &d in dims {
        m = m.int(1, d);
    }
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    m.int(2, 1).text(8, name).bytes(9, &raw)
}

/// `ValueInfoProto`: a float tensor whose first dimension is the batch (`N`).
fn float_value(name: &str, columns: i64) -> Message {
    let shape = Message::default()
        .message(1, Message::default().text(2, "N"))
        .message(1, Message::default().int(1, columns));
    let tensor = Message::default().int(1, 1).message(2, shape);
    Message::default()
        .text(1, name)
        .message(2, Message::default().message(1, tensor))
}

fn node(op: &str, inputs: &[&str], output: &str) -> Message {
    let mut m = Message::default();
    for input in inputs {
        m = m.text(1, input);
    }
    m.text(2, output).text(3, output).text(4, op)
}

/// An ONNX model with the iris model's signature (`input` f32 [N,4] to `probabilities` f32
/// [N,3]) computing `input · 0 + bias`: every row's answer is `bias`.
pub fn iris_like(bias: [f32; 3]) -> Vec<u8> {
    iris_like_padded(bias, 0)
}

/// [`iris_like`] with an unused initializer of `padding` floats: a larger model file that
/// answers the same.
pub fn iris_like_padded(bias: [f32; 3], padding: usize) -> Vec<u8> {
    let mut graph = Message::default()
        .message(1, node("MatMul", &["input", "w"], "h"))
        .message(1, node("Add", &["h", "b"], "probabilities"))
        .text(2, "iris-like")
        .message(5, float_tensor("w", &[4, 3], &[0.0; 12]))
        .message(5, float_tensor("b", &[3], &bias))
        .message(11, float_value("input", 4))
        .message(12, float_value("probabilities", 3));
    if padding > 0 {
        graph = graph.message(
            5,
            float_tensor("padding", &[padding as i64], &vec![0.0; padding]),
        );
    }
    Message::default()
        .int(1, 8)
        .text(2, "plinth-tests")
        .message(7, graph)
        .message(8, Message::default().text(1, "").int(2, 13))
        .0
}
