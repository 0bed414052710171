// The manifest's schema, described once: every key, in the order `rsi validate` prints them, with
// the RunConfig member it sets, what a valid value is (and the words an error uses for it) and how
// the key bears on a lineage. Driven from here (runtime/src/manifest.cpp): parse_manifest's reader,
// resolved_yaml's writer, the key lists of each section (unknown keys, did-you-mean), the keys
// manifest_differences lets change on a resume, and manifest_keys() (the documentation test).
// Internal to runtime/.
//
// visit_manifest_keys(config, visitor) calls, in order:
//   v.value(path, member, ok, expected, options)      a scalar key
//   v.choice(path, member, {{name, value}...}, expected, options)  a key naming one of an enum's values
//   v.custom(path, read(reader, config), write(emitter, config))   a key with a shape of its own
//   v.check(section, fn(reader, config))               the reader's cross-key checks and derived defaults
// `config` is a RunConfig (the reader) or a const one (the writer and the key lists); `member` is
// read as the value a manifest without the key gets. Entries may depend on earlier ones: the reader
// has set every key above when it reaches a line.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "rsi/models/genome.h"
#include "rsi/runtime/manifest.h"
#include "yaml_schema.h"

namespace rsi::runtime::schema {

// How a key bears on a lineage (manifest_differences, on a resume or a resubmission).
struct KeyOptions {
  bool free = false;    // does not shape the lineage: may change between a run and its resume
  bool later = false;   // added after lineages were written: absent there means its default
  bool quoted = false;  // written in double quotes (words that Slurm reads)
};
inline constexpr KeyOptions kFree{.free = true};
inline constexpr KeyOptions kLater{.later = true};

// Upper bounds of the integer keys (experiments/README.md lists them): values the loop can serve.
inline constexpr int kMaxPopulation = 10'000;
inline constexpr int kMaxGenerations = 1'000'000;
inline constexpr std::int64_t kMaxParameters = 1'000'000'000;
inline constexpr std::int64_t kMaxFlops = 1'000'000'000'000;
inline constexpr int kMaxEpochs = 1000;
inline constexpr int kMaxWidth = 65536;
inline constexpr int kMaxNodes = 100'000;
inline constexpr int kMaxRanksPerNode = 1024;

template <typename T>
std::function<bool(const T&)> in_range(T low, T high) {
  return [low, high](const T& v) { return v >= low && v <= high; };
}
inline std::string range_text(std::int64_t low, std::int64_t high) {
  return "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
}
inline const std::string kSwitch = "true or false";

// Defined in manifest.cpp: the reader, the keys with a shape of their own and the image data's probe.
class ManifestReader;
void read_image_key(ManifestReader& r, RunConfig& rc, const std::string& key);
void write_image_key(YAML::Emitter& out, const scheduler::TaskSpec& task, const std::string& key);
void read_seed_list(ManifestReader& r, RunConfig& rc);
void write_seed_list(YAML::Emitter& out, const RunConfig& rc);
void probe_image_task(ManifestReader& r, RunConfig& rc);

// run and task.
template <typename Config, typename V>
void visit_run_and_task_keys(Config& rc, V& v) {
  using Kind = scheduler::TaskSpec::Kind;
  auto& loop = rc.loop;
  auto& task = loop.task;
  // --- run ---
  // The name becomes the directory runs/<name> and the Slurm job name: "" would be runs/ itself and
  // "../x" or "a/b" a directory elsewhere (found by tests/fuzz/).
  v.value("run.name", rc.name,
          [](const std::string& s) {
            return !s.empty() && s.size() <= 128 && s.front() != '.' &&
                   std::all_of(s.begin(), s.end(), [](unsigned char c) {
                     return std::isalnum(c) || c == '-' || c == '_' || c == '.';
                   });
          },
          "a name of letters, digits, '-', '_' and '.' (up to 128, not starting with '.'; it names runs/<name>)");
  v.value("run.seed", loop.seed, {}, "a non-negative integer");

  // --- task: kind, data and split, surrogate settings ---
  v.choice("task.kind", task.kind,
           {{"fashion_mnist", Kind::FashionMnist}, {"surrogate", Kind::Surrogate}, {"images", Kind::Images}},
           "one of fashion_mnist, images, surrogate");
  v.check("task", [](auto&, auto& c) {
    if (c.loop.task.kind == Kind::Images) c.loop.task.split.unlabeled = 0;  // no pool unless asked for
  });
  v.value("task.data_dir", task.data_dir, {}, "");
  for (const char* key : {"train", "test", "layout", "classes"})
    v.custom(std::string("task.") + key, [key](auto& r, auto& c) { read_image_key(r, c, key); },
             [key](YAML::Emitter& out, const RunConfig& c) {
               if (c.loop.task.kind == Kind::Images) write_image_key(out, c.loop.task, key);
             });
  {
    // Fashion-MNIST has 60000 training images; an images task's bound is its data's (check_split).
    const std::int64_t most = task.kind == Kind::Images ? std::int64_t{1} << 31 : 60000;
    const std::string range = "[1, " + std::to_string(most) + "]";
    v.value("task.labeled", task.split.labeled, in_range<std::int64_t>(1, most),
            "an integer in " + range + " (0 would train on nothing)");
    v.value("task.unlabeled", task.split.unlabeled, in_range<std::int64_t>(0, most),
            "an integer in [0, " + std::to_string(most) + "]");
    v.value("task.validation", task.split.validation, in_range<std::int64_t>(1, most),
            "an integer in " + range + " (0 would make every validation accuracy 0: selection would be blind)");
  }
  v.check("task", [](auto& r, auto& c) {
    const models::SplitSizes& split = c.loop.task.split;
    if (c.loop.task.kind != Kind::Images && split.labeled + split.unlabeled + split.validation > 60000)
      throw ManifestError(where(r.source(), r.node("task")) +
                          ": task: labeled + unlabeled + validation exceed the 60000 training images");
    if (c.loop.task.kind == Kind::Images && r.load_data()) probe_image_task(r, c);
  });
  v.value("task.surrogate_cost_seconds", task.surrogate_cost_seconds,
          [](const double& x) { return x >= 0 && x < 3600; },
          "seconds in [0, 3600)");
  v.value("task.surrogate_noise", task.surrogate_noise,
          [](const double& x) { return x >= 0 && x < 1; }, "a number in [0, 1)");
  v.value("task.surrogate_class_skew", task.surrogate_class_skew, in_range(0.0, 1.0), "a number in [0, 1]");
  v.value("task.surrogate_pseudo_labels", task.surrogate_pseudo_labels, {}, kSwitch);
  v.value("task.surrogate_drift", task.surrogate_drift, in_range(0.0, 0.5),
          "an accuracy amplitude in [0, 0.5] (0 = off)", kLater);
  v.value("task.surrogate_drift_period", task.surrogate_drift_period, in_range(1, kMaxGenerations),
          range_text(1, kMaxGenerations), kLater);

}

// population, selection and design.
template <typename Config, typename V>
void visit_loop_keys(Config& rc, V& v) {
  auto& loop = rc.loop;
  // --- population: bounded so that every accepted value is one the loop can serve: the coordinator
  // designs a whole generation before training it, so children costs memory before any result ---
  v.value("population.size", loop.population_size, in_range(1, kMaxPopulation), range_text(1, kMaxPopulation));
  v.value("population.children", loop.children_per_generation, in_range(1, kMaxPopulation),
          range_text(1, kMaxPopulation));
  v.value("population.generations", loop.generations, in_range(0, kMaxGenerations), range_text(0, kMaxGenerations));

  // --- selection ---
  using Selection = scheduler::SelectionKind;
  v.choice("selection.kind", loop.selection,
           {{"truncation", Selection::Truncation}, {"tournament", Selection::Tournament}, {"aging", Selection::Aging}},
           "one of truncation, tournament, aging");
  // Each tournament draws this many members (with replacement): bounded like the population.
  v.value("selection.tournament_size", loop.tournament_size, in_range(1, kMaxPopulation),
          range_text(1, kMaxPopulation));

  // --- design: the limits every designed child (and seed) meets. Upper bounds: what one rank can
  // hold and train (a child's weights, gradients and optimizer state are ~16 bytes a parameter), and
  // the genome format's own block limit ---
  auto& lim = loop.limits;
  const int max_blocks = models::GenomeLimits{}.max_blocks;
  v.value("design.max_parameters", lim.max_parameters, in_range<std::int64_t>(1, kMaxParameters),
          range_text(1, kMaxParameters));
  v.value("design.max_flops", lim.max_flops, in_range<std::int64_t>(1, kMaxFlops), range_text(1, kMaxFlops));
  v.value("design.max_blocks", lim.max_blocks, in_range(1, max_blocks), range_text(1, max_blocks));
  v.value("design.max_epochs", lim.max_epochs, in_range(1, kMaxEpochs), range_text(1, kMaxEpochs));
  v.value("design.max_units", lim.max_units, in_range(1, kMaxWidth), range_text(1, kMaxWidth));
  v.value("design.max_channels", lim.max_channels, in_range(1, kMaxWidth), range_text(1, kMaxWidth));
  // How the loop improves itself, and the ablation switches (scheduler::ImprovementConfig).
  using Strategy = scheduler::ImprovementConfig::Strategy;
  auto& imp = loop.improvement;
  v.choice("design.strategy", imp.strategy, {{"evolved", Strategy::Evolved}, {"random", Strategy::Random}},
           "one of evolved (parents design with their evolving genes), random (uniform over the same operators)",
           kLater);
  v.value("design.freeze_genes", imp.freeze_genes, {}, kSwitch, kLater);
  v.value("design.deduplicate", imp.deduplicate, {}, kSwitch, kLater);
  v.value("design.redesign_attempts", imp.redesign_attempts, in_range(0, 1000), range_text(0, 1000), kLater);
  v.value("design.extended_recipe", imp.extended_recipe, {}, kSwitch, kLater);
  using Distill = scheduler::ImprovementConfig::Distill;
  v.choice("design.distill", imp.distill, {{"always", Distill::Always}, {"when_changed", Distill::FunctionChanged}},
           "one of always (every child with a parent distils from it), when_changed (only a child whose design "
           "changed its parent's function)",
           kLater);
  auto& pred = imp.predictor;
  v.value("design.predictor.enabled", pred.enabled, {}, kSwitch, kLater);
  v.value("design.predictor.candidates", pred.candidates, in_range(1, 64), range_text(1, 64), kLater);
  v.value("design.predictor.min_examples", pred.min_examples, in_range(1, 100000), range_text(1, 100000), kLater);
  v.value("design.predictor.ridge", pred.ridge,
          [](const double& x) { return x > 0 && x <= 1e6; },
          "a number in (0, 1e6]", kLater);
  v.value("design.predictor.min_correlation", pred.min_correlation, in_range(-1.0, 1.0),
          "a rank correlation in [-1, 1] (-1 = screen whatever it is)", kLater);
  auto& rungs = imp.rungs;
  v.value("design.rungs.enabled", rungs.enabled, {}, kSwitch, kLater);
  v.value("design.rungs.first_epochs", rungs.first_epochs, in_range(1, kMaxEpochs), range_text(1, kMaxEpochs),
          kLater);
  v.value("design.rungs.promote", rungs.promote,
          [](const double& x) { return x > 0 && x <= 1; },
          "a fraction in (0, 1] of each generation's children", kLater);
  v.value("design.rungs.continue_schedule", rungs.continue_schedule, {}, kSwitch, kLater);
  v.value("design.rungs.keep_optimizer", rungs.keep_optimizer, {}, kSwitch, kLater);
  auto& niches = imp.niches;
  v.value("design.niches.enabled", niches.enabled, {}, kSwitch, kLater);
  v.value("design.niches.parameter_bins", niches.parameter_bins, in_range(1, 64), range_text(1, 64), kLater);
  v.value("design.niches.depth_bins", niches.depth_bins, in_range(1, 64), range_text(1, 64), kLater);

}

// cluster, output, checkpoints, monitoring: where and how the run goes.
template <typename Config, typename V>
void visit_job_keys(Config& rc, V& v) {
  auto& loop = rc.loop;
  // --- cluster: trainer groups, threads, the job's shape (rsi submit), device and kernels ---
  auto& job = rc.cluster;
  v.value("cluster.group_size", loop.group_size, in_range(1, kMaxRanksPerNode * 64),
          range_text(1, kMaxRanksPerNode * 64) + " (it must divide the job's ranks)");
  v.value("cluster.threads_per_rank", loop.threads_per_rank, in_range(1, kMaxRanksPerNode),
          range_text(1, kMaxRanksPerNode));
  v.value("cluster.nodes", job.nodes, in_range(1, kMaxNodes), range_text(1, kMaxNodes));
  v.value("cluster.gpus_per_node", job.gpus_per_node, in_range(0, 64), range_text(0, 64) + " (0 = CPU)");
  v.check("cluster", [](auto&, auto& c) {  // one rank per GPU: the GPU count is the natural default
    if (c.cluster.gpus_per_node > 0) c.cluster.tasks_per_node = c.cluster.gpus_per_node;
  });
  v.value("cluster.tasks_per_node", job.tasks_per_node, in_range(1, kMaxRanksPerNode),
          range_text(1, kMaxRanksPerNode));
  v.check("cluster", [](auto& r, auto& c) {
    const ClusterConfig& j = c.cluster;
    if (j.gpus_per_node > 0 && j.tasks_per_node != j.gpus_per_node)
      throw ManifestError(where(r.source(), r.node("cluster.tasks_per_node")) + ": cluster.tasks_per_node: " +
                          std::to_string(j.tasks_per_node) + " ranks per node with gpus_per_node " +
                          std::to_string(j.gpus_per_node) + "; a rank drives one GPU, so they must be equal");
  });
  // Values that become #SBATCH lines: one word each, or sbatch would read the rest as another option.
  const std::function<bool(const std::string&)> slurm_word = [](const std::string& s) {
    return s.find_first_of(" \t\r\n#'\"\\$`") == std::string::npos;
  };
  const KeyOptions slurm{.free = true, .quoted = true};
  v.value("cluster.time_limit", job.time_limit,
          [](const std::string& s) { return slurm_time_seconds(s) > 0; },
          "a time limit [D-]HH:MM:SS (e.g. 02:00:00 or 1-12:00:00)", slurm);
  v.value("cluster.partition", job.partition, slurm_word, "a partition name (one word)", slurm);
  v.value("cluster.account", job.account, slurm_word, "an account name (one word)", slurm);
  v.value("cluster.signal_seconds", job.signal_seconds, in_range(0, 65535),
          "seconds in [0, 65535] (0 = no warning signal)", kFree);
  v.check("cluster", [](auto& r, auto& c) {
    const ClusterConfig& j = c.cluster;
    if (j.signal_seconds >= slurm_time_seconds(j.time_limit))
      throw ManifestError(where(r.source(), r.node("cluster")) + ": cluster.signal_seconds " +
                          std::to_string(j.signal_seconds) + " is not shorter than time_limit " + j.time_limit +
                          ": the warning signal would come before the run starts");
  });
  const auto one_of = [](std::initializer_list<const char*> names) {
    return [names = std::vector<std::string>(names.begin(), names.end())](
                                                       const std::string& s) {
      return std::find(names.begin(), names.end(), s) != names.end();
    };
  };
  v.value("cluster.device", job.device, one_of({"cpu", "auto", "cuda"}), "one of cpu, auto, cuda");
  v.value("cluster.cpu_kernels", job.cpu_kernels, one_of({"best", "avx512", "avx2", "generic"}),
          "one of best, avx512, avx2, generic", kFree);
  v.value("cluster.cuda_conv", job.cuda_conv, one_of({"im2col", "cudnn"}), "one of im2col, cudnn");
  v.value("cluster.cuda_tf32", job.cuda_tf32, {}, kSwitch);
  v.value("cluster.cuda_graphs", job.cuda_graphs, {}, kSwitch, kFree);
  v.value("cluster.cuda_fuse", job.cuda_fuse, {}, kSwitch, kFree);

  // --- output: the run directory (runs/<name> when not given) ---
  v.check("output", [](auto&, auto& c) { c.output_directory = "runs/" + c.name; });
  v.value("output.directory", rc.output_directory, {}, "");
  v.check("output", [](auto&, auto& c) {
    if (c.output_directory.empty()) c.output_directory = "runs/" + c.name;
  });

  // --- checkpoints: retention ---
  v.value("checkpoints.keep_last_generations", rc.retention.keep_last_generations,
          [](const int& x) { return x >= 0; }, "an integer >= 0 (0 = all)");
  v.value("checkpoints.keep_population", rc.retention.keep_population, {}, kSwitch);

  // --- monitoring: the Prometheus exporter (monitoring/README.md); never part of the lineage ---
  auto& mon = rc.monitoring;
  v.value("monitoring.bind", mon.bind,
          
              [](const std::string& s) { return !s.empty() && s.find_first_of(" \t/") == std::string::npos; },
          "an IP address to listen on (e.g. 127.0.0.1, or 0.0.0.0 for every interface)", kFree);
  v.value("monitoring.port", mon.port, in_range(0, 65535), "a TCP port in [1, 65535], or 0 for no exporter", kFree);
  v.value("monitoring.targets_file", mon.targets_file, {}, "", kFree);
  v.value("monitoring.linger_seconds", mon.linger_seconds, in_range(0.0, 3600.0), "seconds in [0, 3600]", kFree);

}

// governance: gates, red lines, monitors (scheduler/governance.h; experiments/README.md).
template <typename Config, typename V>
void visit_governance_keys(Config& rc, V& v) {
  auto& loop = rc.loop;
  const auto non_negative = [](const double& x) { return x >= 0; };
  const auto non_negative_int = [](const std::int64_t& x) { return x >= 0; };
  const auto fraction = [](const double& x) { return x >= 0 && x <= 1; };
  const std::string off = "a number >= 0 (0 = off)";
  // Accuracies, gains and gaps are fractions: 0.85, not 85.
  const std::string fraction_off = "a fraction in [0, 1] (0 = off; accuracies are fractions: 0.85, not 85)";
  auto& gates = loop.governance.gates;
  v.value("governance.gates.max_gain", gates.max_gain, fraction, fraction_off);
  v.value("governance.gates.max_parameters", gates.max_parameters, non_negative_int, off);
  v.value("governance.gates.max_flops", gates.max_flops, non_negative_int, off);
  v.value("governance.gates.max_goodhart_gap", gates.max_goodhart_gap, fraction, fraction_off);
  v.value("governance.gates.every_n_generations", gates.every_n_generations, in_range(0, kMaxGenerations),
          range_text(0, kMaxGenerations) + " (0 = off)");
  v.value("governance.gates.approval_timeout_seconds", gates.approval_timeout_seconds,
          in_range(0.0, 366 * 86400.0), "seconds in [0, 31622400]", kFree);
  v.value("governance.gates.poll_seconds", gates.poll_seconds, in_range(0.01, 3600.0), "seconds in [0.01, 3600]",
          kFree);
  using OnReject = scheduler::GateConfig::OnReject;
  v.choice("governance.gates.on_reject", gates.on_reject, {{"rollback", OnReject::Rollback}, {"stop", OnReject::Stop}},
           "one of rollback, stop");
  auto& red = loop.governance.red_lines;
  v.value("governance.red_lines.max_parameters", red.max_parameters, non_negative_int, off);
  v.value("governance.red_lines.max_flops_per_sample", red.max_flops_per_sample, non_negative_int, off);
  v.value("governance.red_lines.compute_budget_model_seconds", red.compute_budget_model_seconds, non_negative, off);
  v.value("governance.red_lines.max_gain_per_generation", red.max_gain_per_generation, fraction, fraction_off);
  auto& mons = loop.governance.monitors;
  v.value("governance.monitors.goodhart_gap_alert", mons.goodhart_gap_alert, fraction, fraction_off);
  v.value("governance.monitors.pseudo_label_accuracy_floor", mons.pseudo_label_accuracy_floor, fraction, fraction_off);
  // ln 10 is the entropy of a uniform histogram over the 10 classes.
  v.value("governance.monitors.label_entropy_floor", mons.label_entropy_floor, in_range(0.0, std::log(10.0)),
          "nats in [0, 2.302585] (0 = off; ln 10 = 2.302585 is a uniform histogram)");
  v.value("governance.monitors.diversity_floor", mons.diversity_floor, non_negative, off);
  v.value("governance.monitors.disparity_growth_alert", mons.disparity_growth_alert, fraction, fraction_off);
  v.value("governance.monitors.takeoff_alert", mons.takeoff_alert, {}, kSwitch);
  v.value("governance.monitors.trend_window", mons.trend_window, in_range(2, 1000), "an integer in [2, 1000]");
}

// Every key of a manifest, in the order of the resolved manifest (the order of the sections is
// also the order in which they are read: later ones check against earlier ones).
template <typename Config, typename V>
void visit_manifest_keys(Config& rc, V& v) {
  visit_run_and_task_keys(rc, v);
  visit_loop_keys(rc, v);
  // --- seeds: genome files (relative to the manifest) or inline genomes, checked against the
  // designer genes' table and the design limits above ---
  v.custom("seeds", [](auto& r, auto& c) { read_seed_list(r, c); },
           [](YAML::Emitter& out, const RunConfig& c) { write_seed_list(out, c); });

  visit_job_keys(rc, v);
  visit_governance_keys(rc, v);
}


}  // namespace rsi::runtime::schema
