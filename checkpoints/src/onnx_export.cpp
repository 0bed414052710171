// rsi export --format onnx: a model of a run as an ONNX graph, built with ONNX's own protobuf
// classes and checker (Debian libonnx-dev). The graph follows checkpoints/FORMAT.md, "Named
// tensors" block by block, with standard opset-13 operators only; initializers keep the table's
// names. Built without ONNX, export_onnx says how to get it.
#include "layout.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/models/network.h"

#ifdef RSI_HAVE_ONNX
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#endif

namespace rsi::checkpoints {

namespace fs = std::filesystem;

#ifdef RSI_HAVE_ONNX

namespace {

using models::Block;

constexpr int kOpset = 13;  // Conv, Gemm, BatchNormalization, pools, Erf, Flatten: all in 13

// Builds the graph: nodes append in order, each block reads `x_` and leaves its output there.
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto& graph, const std::vector<models::NamedTensor>& table, const scheduler::Weights& w)
      : graph_(graph), weights_(w) {
    for (const auto& t : table) tensors_[t.name] = t;
  }

  void build(const models::Genome& genome) {
    x_ = "image";
    bool spatial = true;
    for (std::size_t i = 0; i < genome.blocks.size(); ++i) {
      const Block& b = genome.blocks[i];
      const std::string name = "block" + std::to_string(i);
      if (b.kind == Block::Kind::Dense && spatial) {
        node("Flatten", {x_}, name + ".flatten", {int_attribute("axis", 1)});
        spatial = false;
      }
      switch (b.kind) {
        case Block::Kind::Conv: conv(name + ".conv", b.kernel, b.stride); break;
        case Block::Kind::Pool: pool(name, b); break;
        case Block::Kind::Residual: residual(name + ".residual", b.kernel); break;
        case Block::Kind::Dense:
          node("Gemm", {x_, initializer(name + ".dense.weight"), initializer(name + ".dense.bias")}, name + ".dense",
               {int_attribute("transB", 1)});
          break;
        case Block::Kind::BatchNorm: batch_norm(name + ".batchnorm"); break;
        case Block::Kind::Activation: activation(name, b.activation); break;
        case Block::Kind::Dropout: break;  // the identity at inference
      }
    }
    // The last block is dense (validate): its output is the graph's.
    graph_.mutable_node(graph_.node_size() - 1)->set_output(0, "logits");
    x_ = "logits";
  }

 private:
  onnx::AttributeProto int_attribute(const std::string& name, std::int64_t value) {
    onnx::AttributeProto a;
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(value);
    return a;
  }
  onnx::AttributeProto ints_attribute(const std::string& name, const std::vector<std::int64_t>& values) {
    onnx::AttributeProto a;
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INTS);
    for (std::int64_t v : values) a.add_ints(v);
    return a;
  }
  onnx::AttributeProto float_attribute(const std::string& name, float value) {
    onnx::AttributeProto a;
    a.set_name(name);
    a.set_type(onnx::AttributeProto::FLOAT);
    a.set_f(value);
    return a;
  }

  // Appends a node reading `inputs`; its output, named `name`, becomes x_.
  void node(const std::string& op, const std::vector<std::string>& inputs, const std::string& name,
            const std::vector<onnx::AttributeProto>& attributes = {}) {
    onnx::NodeProto* n = graph_.add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(name);
    for (const auto& a : attributes) *n->add_attribute() = a;
    x_ = name;
  }

  // The named tensor as an initializer (once), from the params or state buffer.
  std::string initializer(const std::string& name) {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw CheckpointError("onnx: the network has no tensor '" + name + "'");
    if (!added_.insert(name).second) return name;
    const models::NamedTensor& t = it->second;
    const std::vector<float>& buffer = t.in_state ? weights_.state : weights_.params;
    std::int64_t size = 1;
    onnx::TensorProto* tensor = graph_.add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(onnx::TensorProto::FLOAT);
    for (std::int64_t d : t.shape) {
      tensor->add_dims(d);
      size *= d;
    }
    if (t.offset + size > static_cast<std::int64_t>(buffer.size()))
      throw CheckpointError("onnx: tensor '" + name + "' runs past the end of the weights");
    tensor->set_raw_data(buffer.data() + t.offset, static_cast<std::size_t>(size) * sizeof(float));
    return name;
  }

  std::string scalar(const std::string& name, float value) {
    if (added_.insert(name).second) {
      onnx::TensorProto* tensor = graph_.add_initializer();
      tensor->set_name(name);
      tensor->set_data_type(onnx::TensorProto::FLOAT);
      tensor->set_raw_data(&value, sizeof value);
    }
    return name;
  }

  void conv(const std::string& name, int kernel, int stride) {
    const std::int64_t pad = kernel / 2;
    node("Conv", {x_, initializer(name + ".weight"), initializer(name + ".bias")}, name,
         {ints_attribute("kernel_shape", {kernel, kernel}), ints_attribute("strides", {stride, stride}),
          ints_attribute("pads", {pad, pad, pad, pad})});
  }

  void batch_norm(const std::string& name) {
    node("BatchNormalization",
         {x_, initializer(name + ".gamma"), initializer(name + ".beta"), initializer(name + ".running_mean"),
          initializer(name + ".running_var")},
         name, {float_attribute("epsilon", 1e-5f)});
  }

  void pool(const std::string& name, const Block& b) {
    const bool max = b.pool_kind == Block::PoolKind::Max;
    node(max ? "MaxPool" : "AveragePool", {x_}, name + (max ? ".maxpool" : ".avgpool"),
         {ints_attribute("kernel_shape", {b.size, b.size}), ints_attribute("strides", {b.stride, b.stride})});
  }

  void residual(const std::string& name, int kernel) {
    const std::string input = x_;
    conv(name + ".conv1", kernel, 1);
    batch_norm(name + ".bn1");
    node("Relu", {x_}, name + ".relu");
    conv(name + ".conv2", kernel, 1);
    batch_norm(name + ".bn2");
    node("Add", {input, x_}, name + ".add");
  }

  // GELU is the exact form 0.5 x (1 + erf(x / sqrt 2)); opset 13 has no Gelu operator.
  void activation(const std::string& name, kernels::Activation a) {
    if (a == kernels::Activation::ReLU) return node("Relu", {x_}, name + ".relu");
    if (a == kernels::Activation::Tanh) return node("Tanh", {x_}, name + ".tanh");
    const std::string input = x_;
    node("Mul", {x_, scalar("gelu.inv_sqrt2", 0.70710678118654752f)}, name + ".gelu.scaled");
    node("Erf", {x_}, name + ".gelu.erf");
    node("Add", {x_, scalar("gelu.one", 1.0f)}, name + ".gelu.cdf2");
    node("Mul", {input, x_}, name + ".gelu.x_cdf2");
    node("Mul", {x_, scalar("gelu.half", 0.5f)}, name + ".gelu");
  }

  onnx::GraphProto& graph_;
  const scheduler::Weights& weights_;
  std::map<std::string, models::NamedTensor> tensors_;
  std::set<std::string> added_;
  std::string x_;
};

void add_io(onnx::ValueInfoProto* value, const std::string& name, const std::vector<std::int64_t>& dims) {
  value->set_name(name);
  onnx::TypeProto_Tensor* type = value->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("N");
  for (std::int64_t d : dims) type->mutable_shape()->add_dim()->set_dim_value(d);
}

void add_metadata(onnx::ModelProto& model, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* entry = model.add_metadata_props();
  entry->set_key(key);
  entry->set_value(value);
}

std::string shortest(double value) {  // round-trips
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

onnx::ModelProto onnx_model(const detail::ExportSource& source) {
  const scheduler::ModelRecord& m = source.group.record;
  const models::Genome genome = models::from_yaml(m.genome_yaml, "model " + std::to_string(m.id) + " genome");
  const models::InputSpec& input = source.run.input;
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("rsi");
  model.set_producer_version(source.run.program_version + " (" + source.run.git_commit + ")");
  model.set_model_version(static_cast<std::int64_t>(m.id));
  model.set_doc_string("rsi model " + std::to_string(m.id) + " of run '" + source.run.run_name +
                       "': input image [N," + std::to_string(input.channels) + "," + std::to_string(input.height) +
                       "," + std::to_string(input.width) +
                       "] float pixels in [0,1] (bytes/255, no other normalisation), output logits [N," +
                       std::to_string(input.classes) + "]");
  model.add_opset_import()->set_version(kOpset);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("rsi_model_" + std::to_string(m.id));
  add_io(graph->add_input(), "image", {input.channels, input.height, input.width});
  GraphBuilder(*graph, models::named_tensors(genome, input), *source.weights).build(genome);
  add_io(graph->add_output(), "logits", {input.classes});
  add_metadata(model, "run_name", source.run.run_name);
  add_metadata(model, "model_id", std::to_string(m.id));
  add_metadata(model, "generation", std::to_string(m.generation));
  add_metadata(model, "genome", m.genome_yaml);
  add_metadata(model, "manifest_hash", source.run.manifest_hash);
  add_metadata(model, "provenance_hash", source.group.stored.provenance);
  add_metadata(model, "weights_digest", m.weights_digest);
  add_metadata(model, "val_accuracy", shortest(m.metrics.val_accuracy));
  add_metadata(model, "test_accuracy", shortest(m.metrics.test_accuracy));
  add_metadata(model, "source_file", source.file.filename().string());
  return model;
}

}  // namespace

bool onnx_export_available() { return true; }

void export_onnx(const fs::path& run_dir, std::uint64_t model_id, const fs::path& out) {
  const detail::ExportSource source = detail::find_export_source(run_dir, model_id);
  const std::string label = run_dir.string() + ": model " + std::to_string(model_id);
  if (!source.weights)
    throw CheckpointError(label + ": has no weights (status " + scheduler::status_name(source.group.record.status) +
                          "): there is no network to export");
  std::string bytes;
  try {
    const onnx::ModelProto model = onnx_model(source);
    onnx::checker::check_model(model);
    if (!model.SerializeToString(&bytes)) throw CheckpointError("protobuf could not serialise the model");
  } catch (const std::exception& e) {
    throw CheckpointError(label + ": building the ONNX graph: " + e.what());
  }
  const fs::path tmp = out.string() + ".tmp";
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file.flush())
      throw CheckpointError(tmp.string() + ": cannot write: " + std::strerror(errno) + " (is the directory writable?)");
  }
  detail::commit(tmp, out);
}

#else  // built without ONNX

bool onnx_export_available() { return false; }

void export_onnx(const fs::path&, std::uint64_t, const fs::path&) {
  throw CheckpointError(
      "this rsi was built without ONNX export: install Debian's libonnx-dev and libprotobuf-dev "
      "(scripts/setup does), then configure and build again (cmake -S . -B build && cmake --build build)");
}

#endif

}  // namespace rsi::checkpoints
