// Governance (scheduler/governance.h) on small deterministic surrogate runs with a MemorySink: each
// approval gate, each red line, the budget and each monitor's alert is triggered on purpose and
// shows in the records; approvals, rejections (rollback, stop), an approval timeout and its resume;
// the decision and audit files; the lineage store keeps the events in its hash chain and `verify`
// names a changed event field.
//   build-dir/tests/test_governance       (a few seconds)
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/collective/communicator.h"
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/governance_controller.h"
#include "rsi/scheduler/loop.h"
#include "seed_genomes.h"

namespace {

namespace fs = std::filesystem;
using namespace rsi::scheduler;
using Records = std::vector<GenerationRecord>;


LoopConfig base_config() {
  LoopConfig c;
  c.seed = 7;
  c.generations = 5;
  c.population_size = 4;
  c.children_per_generation = 6;
  c.task.kind = TaskSpec::Kind::Surrogate;
  c.task.surrogate_cost_seconds = 0.0;
  c.task.surrogate_noise = 0.005;
  c.seeds = {seed_genome("linear"), seed_genome("mlp")};
  c.governance.gates.poll_seconds = 0.001;
  c.governance.gates.approval_timeout_seconds = 5;
  return c;
}

struct Outcome {
  Records records;
  LoopSummary summary;
  std::vector<std::pair<int, bool>> pending;  // on_approval_pending calls
};

Outcome run(const LoopConfig& config, const ResumeState* resume = nullptr) {
  auto world = rsi::collective::make_local_communicator();
  MemorySink sink;
  Outcome out;
  LoopEvents events;
  events.on_approval_pending = [&out](int g, bool p) { out.pending.emplace_back(g, p); };
  out.summary = run_loop(config, *world, {&sink}, events, resume);
  out.records = sink.records;
  return out;
}

std::function<std::optional<Decision>(int)> always(bool approved) {
  return [approved](int g) {
    return std::optional<Decision>(Decision{approved, "tester@test", "2026-01-01T00:00:00Z", "test decision " + std::to_string(g)});
  };
}

std::vector<const GovernanceEvent*> events_of(const Records& records, const std::string& kind) {
  std::vector<const GovernanceEvent*> out;
  for (const auto& r : records)
    for (const auto& e : r.events)
      if (e.kind == kind) out.push_back(&e);
  return out;
}

bool has_event(const GenerationRecord& r, const std::string& kind, const std::string& text = "") {
  return std::any_of(r.events.begin(), r.events.end(), [&](const GovernanceEvent& e) {
    return e.kind == kind && e.reason.find(text) != std::string::npos;
  });
}

// The deterministic part of a lineage: ids, genomes, status, metrics, populations, events (not `when`).
std::string fingerprint(const Records& records) {
  std::string s;
  for (const auto& r : records) {
    s += "gen " + std::to_string(r.generation) + " " + r.status + " pop";
    for (auto id : r.population) s.append(" ").append(std::to_string(id));  // (a + b: GCC 12 -Wrestrict false positive)
    for (const auto& m : r.children)
      s += "\n  " + std::to_string(m.id) + " " + status_name(m.status) + " " + m.failure + " " +
           std::to_string(m.metrics.val_accuracy) + " " + std::to_string(m.genome_yaml.size());
    for (const auto& e : r.events)
      s += "\n  event " + std::to_string(e.generation) + " " + e.kind + " " + std::to_string(e.model_id) + " " +
           e.reason + " " + e.who;
    s += "\n";
  }
  return s;
}

// --- off by default ---

TEST(Governance, OffByDefaultAndInertThresholdsChangeNothing) {
  const Outcome off = run(base_config());
  ASSERT_EQ(off.records.size(), 6u);
  for (const auto& r : off.records) {
    EXPECT_TRUE(r.events.empty()) << "generation " << r.generation;
    EXPECT_EQ(r.status, "completed");
    EXPECT_TRUE(r.held_for_rollback.empty());
    EXPECT_LT(r.pseudo_label_accuracy, 0);  // surrogate without pseudo labels: none
  }
  EXPECT_TRUE(off.pending.empty());
  // Thresholds that never trigger leave the lineage exactly as it is without them.
  LoopConfig inert = base_config();
  inert.governance.gates.max_gain = 0.9;
  inert.governance.gates.max_parameters = 1'000'000'000;
  inert.governance.red_lines.max_parameters = 1'000'000'000;
  inert.governance.red_lines.max_gain_per_generation = 0.9;
  inert.governance.monitors.goodhart_gap_alert = 0.9;
  const Outcome same = run(inert);
  EXPECT_EQ(fingerprint(off.records), fingerprint(same.records));
}

// --- approval gates ---

struct GateCase {
  const char* name;
  std::function<void(GateConfig&)> set;
  const char* reason;  // a piece of the gate event's reason
};

TEST(Governance, EachGateFiresWaitsAndRecordsTheApproval) {
  const std::vector<GateCase> cases = {
      {"max_gain", [](GateConfig& g) { g.max_gain = 1e-4; }, "governance.gates.max_gain"},
      {"max_parameters", [](GateConfig& g) { g.max_parameters = 5000; }, "governance.gates.max_parameters"},
      {"max_flops", [](GateConfig& g) { g.max_flops = 10000; }, "governance.gates.max_flops"},
      {"max_goodhart_gap", [](GateConfig& g) { g.max_goodhart_gap = 1e-3; }, "governance.gates.max_goodhart_gap"},
      {"every_n_generations", [](GateConfig& g) { g.every_n_generations = 2; }, "every 2 generations"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LoopConfig config = base_config();
    c.set(config.governance.gates);
    config.poll_decision = always(true);
    const Outcome r = run(config);
    int gated = 0;
    for (std::size_t i = 0; i < r.records.size(); ++i) {
      const GenerationRecord& g = r.records[i];
      if (g.status != "awaiting_approval") {
        EXPECT_FALSE(has_event(g, "gate"));
        continue;
      }
      ++gated;
      EXPECT_GT(g.generation, 0) << "the seeds are never gated";
      EXPECT_TRUE(has_event(g, "gate", c.reason)) << fingerprint({g});
      // The decision is recorded in the next record, with who and why.
      ASSERT_LT(i + 1, r.records.size());
      const GenerationRecord& next = r.records[i + 1];
      ASSERT_TRUE(has_event(next, "approved", "test decision " + std::to_string(g.generation)));
      for (const auto& e : next.events)
        if (e.kind == "approved") {
          EXPECT_EQ(e.who, "tester@test");
          EXPECT_EQ(e.generation, g.generation);
        }
    }
    EXPECT_GT(gated, 0) << "the gate never fired";
    // Each wait is announced and ended for the monitoring exporter.
    EXPECT_EQ(r.pending.size(), 2u * static_cast<std::size_t>(gated));
    for (std::size_t k = 0; k + 1 < r.pending.size(); k += 2) {
      EXPECT_TRUE(r.pending[k].second);
      EXPECT_FALSE(r.pending[k + 1].second);
      EXPECT_EQ(r.pending[k].first, r.pending[k + 1].first);
    }
    EXPECT_FALSE(r.summary.awaiting_approval);
    // A gate on the last generation still waits; its decision gets a record of its own.
    EXPECT_EQ(r.records.back().generation, r.records.back().children.empty() ? 6 : 5);
  }
}

TEST(Governance, ApprovedRunEqualsUngatedRunApartFromTheRecords) {
  LoopConfig gated = base_config();
  gated.governance.gates.every_n_generations = 2;
  gated.poll_decision = always(true);
  const Outcome a = run(gated);
  const Outcome b = run(base_config());
  // The same children and selections: an approval changes nothing but the events and statuses.
  for (std::size_t i = 0; i < b.records.size(); ++i) {
    ASSERT_EQ(a.records[i].children.size(), b.records[i].children.size());
    for (std::size_t k = 0; k < b.records[i].children.size(); ++k)
      EXPECT_EQ(a.records[i].children[k].genome_yaml, b.records[i].children[k].genome_yaml);
    std::vector<std::uint64_t> selected;
    for (auto id : a.records[i].population)
      if (!std::count(a.records[i].held_for_rollback.begin(), a.records[i].held_for_rollback.end(), id))
        selected.push_back(id);
    EXPECT_EQ(selected, b.records[i].population) << "generation " << i;
  }
}

TEST(Governance, RejectionRollsThePopulationBack) {
  LoopConfig config = base_config();
  config.governance.gates.every_n_generations = 2;
  config.poll_decision = [](int g) {
    return std::optional<Decision>(Decision{g != 2, "tester@test", "2026-01-01T00:00:00Z", "no"});
  };
  const Outcome r = run(config);
  ASSERT_GE(r.records.size(), 4u);
  const GenerationRecord& before = r.records[1];
  const GenerationRecord& gated = r.records[2];
  const GenerationRecord& after = r.records[3];
  ASSERT_EQ(gated.status, "awaiting_approval");
  // While waiting, the population holds the dropped members of the one before.
  for (auto id : before.population) EXPECT_TRUE(std::count(gated.population.begin(), gated.population.end(), id));
  ASSERT_TRUE(has_event(after, "rejected", "rolled back"));
  // Generation 3's parents come from generation 1's population only.
  const std::set<std::uint64_t> allowed(before.population.begin(), before.population.end());
  for (const auto& m : after.children)
    for (auto p : m.parents) EXPECT_TRUE(allowed.count(p)) << "child " << m.id << " has parent " << p;
  EXPECT_TRUE(r.summary.ended_by.empty());
}

TEST(Governance, RejectionWithStopPolicyEndsTheRunRolledBack) {
  LoopConfig config = base_config();
  config.governance.gates.every_n_generations = 2;
  config.governance.gates.on_reject = GateConfig::OnReject::Stop;
  config.poll_decision = always(false);
  const Outcome r = run(config);
  ASSERT_EQ(r.records.size(), 4u);  // 0, 1, 2 (gated), 3 (the decision only)
  EXPECT_EQ(r.summary.ended_by, "rejected");
  const GenerationRecord& last = r.records.back();
  EXPECT_TRUE(last.children.empty());
  EXPECT_TRUE(has_event(last, "rejected", "on_reject: stop"));
  EXPECT_EQ(last.population, r.records[1].population);
}

TEST(Governance, TimeoutLeavesTheGenerationAwaitingAndAResumeConsumesTheDecision) {
  LoopConfig config = base_config();
  config.governance.gates.every_n_generations = 3;
  config.governance.gates.approval_timeout_seconds = 0.05;
  const Outcome first = run(config);  // nobody decides
  EXPECT_TRUE(first.summary.awaiting_approval);
  EXPECT_EQ(first.summary.awaiting_generation, 3);
  ASSERT_EQ(first.records.size(), 4u);
  EXPECT_EQ(first.records.back().status, "awaiting_approval");

  ResumeState resume;
  resume.generation = 3;
  resume.next_model_id = first.records.back().next_model_id;
  resume.population = first.records.back().population_models;
  resume.history = first.records;
  LoopConfig decided = config;
  decided.poll_decision = always(true);
  const Outcome rest = run(decided, &resume);
  Records joined = first.records;
  joined.insert(joined.end(), rest.records.begin(), rest.records.end());
  const Outcome straight = run(decided);
  EXPECT_EQ(fingerprint(joined), fingerprint(straight.records));
  EXPECT_TRUE(has_event(rest.records.front(), "approved"));
}

TEST(Governance, StopWhileAwaitingApproval) {
  LoopConfig config = base_config();
  config.governance.gates.every_n_generations = 2;
  // Boundaries of generations 0-3 say no; the first look during the wait for generation 2 says stop.
  config.stop_requested = [calls = 0]() mutable { return ++calls > 4; };
  const Outcome r = run(config);
  EXPECT_TRUE(r.summary.stopped);
  EXPECT_FALSE(r.summary.awaiting_approval);
  ASSERT_EQ(r.records.size(), 3u);
  EXPECT_EQ(r.records.back().status, "awaiting_approval");
  ASSERT_EQ(r.pending.size(), 2u);
  EXPECT_EQ(r.pending[0], std::make_pair(2, true));
  EXPECT_EQ(r.pending[1], std::make_pair(2, false));
}

// --- red lines ---

TEST(Governance, RedLinesRefuseDesignsBeforeTraining) {
  for (const bool flops : {false, true}) {
    SCOPED_TRACE(flops ? "max_flops_per_sample" : "max_parameters");
    LoopConfig config = base_config();
    if (flops) config.governance.red_lines.max_flops_per_sample = 250'000;
    else config.governance.red_lines.max_parameters = 120'000;
    const Outcome r = run(config);
    int refused = 0;
    for (const auto& g : r.records)
      for (const auto& m : g.children) {
        if (m.trained() && g.generation > 0) {
          EXPECT_LE(flops ? m.metrics.flops : m.metrics.parameters, flops ? 250'000 : 120'000) << m.id;
        }
        if (m.failure.find("red line") == std::string::npos) continue;
        ++refused;
        EXPECT_EQ(m.status, ModelRecord::Status::Refused);
        EXPECT_EQ(m.metrics.samples, 0) << "refused before training";
        EXPECT_TRUE(has_event(g, "red_line", flops ? "max_flops_per_sample" : "max_parameters"));
        EXPECT_TRUE(std::any_of(g.events.begin(), g.events.end(), [&](auto& e) { return e.model_id == m.id; }));
      }
    EXPECT_GT(refused, 0) << "the red line never bit";
  }
}

TEST(Governance, SlowDownKeepsBigJumpsOutOfThePopulation) {
  LoopConfig config = base_config();
  config.governance.red_lines.max_gain_per_generation = 0.002;
  const Outcome r = run(config);
  int refused = 0;
  for (const auto& g : r.records)
    for (const auto& m : g.children)
      if (m.failure.find("slow down") != std::string::npos) {
        ++refused;
        EXPECT_EQ(m.status, ModelRecord::Status::Refused);
        EXPECT_GT(m.metrics.val_accuracy, 0) << "trained, then not admitted";
        EXPECT_FALSE(std::count(g.population.begin(), g.population.end(), m.id));
        EXPECT_TRUE(has_event(g, "red_line", "slow down"));
      }
  EXPECT_GT(refused, 0);
  for (std::size_t i = 1; i < r.records.size(); ++i) EXPECT_LE(r.records[i].gain, 0.002 + 1e-12);
}

TEST(Governance, ComputeBudgetEndsTheRunCleanly) {
  LoopConfig config = base_config();
  config.task.surrogate_cost_seconds = 0.001;          // 2 seeds + 6 children per generation
  config.governance.red_lines.compute_budget_model_seconds = 0.0135;
  const Outcome r = run(config);
  EXPECT_EQ(r.summary.ended_by, "budget");
  ASSERT_EQ(r.records.size(), 3u);  // 0.002, 0.008, 0.014 model-seconds
  EXPECT_NEAR(r.records.back().model_seconds, 0.014, 1e-12);
  EXPECT_TRUE(has_event(r.records.back(), "budget", "compute budget spent"));
  EXPECT_FALSE(has_event(r.records[1], "budget"));
  // A resume after the budget ended the run does not go on.
  ResumeState resume;
  resume.generation = 2;
  resume.next_model_id = r.records.back().next_model_id;
  resume.population = r.records.back().population_models;
  resume.history = r.records;
  const Outcome again = run(config, &resume);
  EXPECT_TRUE(again.records.empty());
  EXPECT_EQ(again.summary.ended_by, "budget");
}

// --- monitors ---

TEST(Governance, GoodhartAlert) {
  LoopConfig config = base_config();
  config.governance.monitors.goodhart_gap_alert = 1e-3;
  const Outcome r = run(config);
  for (const auto& g : r.records) {
    EXPECT_NEAR(g.goodhart_gap, g.best_val - g.best_model_test, 1e-12);
    EXPECT_EQ(has_event(g, "alert", "goodhart"), g.goodhart_gap > 1e-3) << g.generation;
  }
  EXPECT_FALSE(events_of(r.records, "alert").empty());
}

TEST(Governance, CollapseAlerts) {
  LoopConfig config = base_config();
  config.task.surrogate_pseudo_labels = true;
  config.governance.monitors.pseudo_label_accuracy_floor = 0.99;
  config.governance.monitors.label_entropy_floor = 2.31;  // above ln 10: every histogram is "collapsed"
  config.governance.monitors.diversity_floor = 1e6;
  const Outcome r = run(config);
  for (const auto& g : r.records) {
    if (g.generation == 0) {
      EXPECT_LT(g.pseudo_label_accuracy, 0) << "seeds have no parent";
      continue;
    }
    EXPECT_GT(g.pseudo_label_accuracy, 0.5);
    EXPECT_NEAR(g.pseudo_label_entropy, std::log(10.0), 1e-9) << "balanced per-class accuracy: uniform labels";
    EXPECT_TRUE(has_event(g, "alert", "pseudo-label accuracy"));
    EXPECT_TRUE(has_event(g, "alert", "pseudo-label entropy"));
    EXPECT_TRUE(has_event(g, "alert", "diversity"));
  }
}

TEST(Governance, BiasAmplificationAlert) {
  LoopConfig config = base_config();
  config.task.surrogate_class_skew = 0.3;
  config.task.surrogate_pseudo_labels = true;
  config.governance.monitors.disparity_growth_alert = 1e-3;
  const Outcome r = run(config);
  bool alerted = false;
  for (const auto& g : r.records) {
    EXPECT_GE(g.class_disparity, 0);
    EXPECT_LE(g.worst_class_accuracy, g.best_model_test);
    if (g.generation > 0) {
      EXPECT_LT(g.pseudo_label_entropy, std::log(10.0)) << "skewed labels lose entropy";
    }
    EXPECT_EQ(has_event(g, "alert", "bias"), g.disparity_trend > 1e-3);
    alerted |= has_event(g, "alert", "bias");
  }
  EXPECT_TRUE(alerted) << "the disparity never grew";
  EXPECT_GT(r.records.back().class_disparity, r.records.front().class_disparity);
}

TEST(Governance, TakeoffEstimateAndAlert) {
  EXPECT_EQ(takeoff_estimate({0.01}), "");
  EXPECT_EQ(takeoff_estimate({0.01, 0.02, 0.04}), "accelerating");
  EXPECT_EQ(takeoff_estimate({0.02, 0.02, 0.021}), "steady");
  EXPECT_EQ(takeoff_estimate({0.04, 0.02, 0.005}), "saturating");
  EXPECT_EQ(takeoff_estimate({0.0, 0.0, 0.0}), "saturating");
  EXPECT_DOUBLE_EQ(slope({1, 2, 3}), 1.0);
  LoopConfig config = base_config();
  config.generations = 8;
  config.governance.monitors.takeoff_alert = true;
  config.governance.monitors.trend_window = 2;
  const Outcome r = run(config);
  int accelerating = 0;
  for (const auto& g : r.records) {
    if (g.generation < 2) {
      EXPECT_EQ(g.takeoff, "") << g.generation;
    } else {
      EXPECT_TRUE(g.takeoff == "accelerating" || g.takeoff == "steady" || g.takeoff == "saturating") << g.takeoff;
    }
    EXPECT_EQ(has_event(g, "alert", "takeoff"), g.takeoff == "accelerating");
    accelerating += g.takeoff == "accelerating";
  }
  EXPECT_GT(accelerating, 0) << "no generation read as accelerating";
}

// --- files ---

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("rsi-governance-" + std::to_string(::getpid()) + "-" +
                                               std::to_string(reinterpret_cast<std::uintptr_t>(this)));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

TEST(Governance, DecisionFilesAreWrittenOnceAndRoundTrip) {
  TempDir tmp;
  EXPECT_FALSE(read_decision(tmp.path, 3));
  const Decision d{false, "ann@lab", "2026-01-02T03:04:05Z", "too fast\n\ttabs and \\ backslashes"};
  write_decision(tmp.path, 3, d);
  const auto back = read_decision(tmp.path, 3);
  ASSERT_TRUE(back);
  EXPECT_FALSE(back->approved);
  EXPECT_EQ(back->who, d.who);
  EXPECT_EQ(back->when, d.when);
  EXPECT_EQ(back->reason, d.reason);
  try {
    write_decision(tmp.path, 3, Decision{true, "bob@lab", "x", "changed my mind"});
    FAIL() << "a second decision was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("already has a decision"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(read_decision(tmp.path, 3)->approved);
  append_audit(tmp.path, {"t1", "ann@lab", 2, "stop_requested", "a\tb\nc"});
  append_audit(tmp.path, {"t2", "bob@lab", -1, "stopped", "signal SIGTERM"});
  const auto log = read_audit(tmp.path);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].reason, "a\tb\nc");
  EXPECT_EQ(log[1].generation, -1);
  EXPECT_NE(user_at_host().find('@'), std::string::npos);
}

// The lineage store keeps events, monitors and the status in the hash chain; verify names a changed field.
TEST(Governance, LineageKeepsEventsAndVerifyNamesAChangedField) {
  TempDir tmp;
  LoopConfig config = base_config();
  config.generations = 3;
  config.governance.gates.every_n_generations = 2;
  config.governance.red_lines.max_parameters = 120'000;
  config.poll_decision = always(true);
  Records records;
  {
    auto world = rsi::collective::make_local_communicator();
    rsi::checkpoints::LineageStore store(tmp.path, rsi::checkpoints::RunInfo{}, rsi::checkpoints::Retention{});
    MemorySink sink;
    run_loop(config, *world, {&store, &sink});
    records = sink.records;
  }
  const auto files = rsi::checkpoints::generation_files(tmp.path);
  ASSERT_EQ(files.size(), records.size());
  std::size_t events = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto g = rsi::checkpoints::read_generation(files[i]);
    const auto& want = records[i];
    EXPECT_EQ(g.record.status, want.status);
    EXPECT_EQ(g.record.held_for_rollback, want.held_for_rollback);
    EXPECT_EQ(g.record.goodhart_gap, want.goodhart_gap);
    EXPECT_EQ(g.record.model_seconds, want.model_seconds);
    ASSERT_EQ(g.record.events.size(), want.events.size());
    for (std::size_t k = 0; k < want.events.size(); ++k) {
      EXPECT_EQ(g.record.events[k].kind, want.events[k].kind);
      EXPECT_EQ(g.record.events[k].reason, want.events[k].reason);
      EXPECT_EQ(g.record.events[k].who, want.events[k].who);
      EXPECT_EQ(g.record.events[k].when, want.events[k].when);
      EXPECT_EQ(g.record.events[k].model_id, want.events[k].model_id);
    }
    events += want.events.size();
  }
  ASSERT_GT(events, 0u);
  ASSERT_TRUE(rsi::checkpoints::verify_run(tmp.path).ok());
  // Generation 3 records the approval of generation 2: change who approved it.
  const fs::path file = tmp.path / "gen-000003.h5";
  {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t a = H5Aopen(f, "event_who", H5P_DEFAULT);
    ASSERT_GE(a, 0);
    const hid_t type = H5Aget_type(a);
    const hid_t space = H5Aget_space(a);
    const std::size_t size = H5Tget_size(type);
    const auto n = static_cast<std::size_t>(H5Sget_simple_extent_npoints(space));
    std::string buf(size * n, '\0');
    ASSERT_GE(H5Aread(a, type, buf.data()), 0);
    const auto at = buf.find("tester");
    ASSERT_NE(at, std::string::npos);
    buf[at] = 'j';  // "jester@test"
    ASSERT_GE(H5Awrite(a, type, buf.data()), 0);
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(a);
    ASSERT_GE(H5Fclose(f), 0);
  }
  const auto report = rsi::checkpoints::verify_run(tmp.path);
  ASSERT_FALSE(report.ok());
  bool named = false;
  for (const auto& p : report.problems)
    named |= p.find("gen-000003.h5") != std::string::npos && p.find("governance event") != std::string::npos &&
             p.find("'who'") != std::string::npos;
  std::string all;
  for (const auto& p : report.problems) all += p + "\n";
  EXPECT_TRUE(named) << all;
  EXPECT_EQ(report.last_good_generation, 2) << all;
}

// --- the controller on its own (governance_controller.h): no loop, no communicator ---

ModelRecord trained_model(std::uint64_t id, int generation, std::int64_t flops) {
  ModelRecord m;
  m.id = id;
  m.generation = generation;
  m.metrics.flops = flops;
  m.metrics.samples = 1000;
  return m;
}

TEST(GovernanceController, AccountsTheBudgetOnceAndGatesHoldTheDroppedMembers) {
  LoopConfig config = base_config();
  config.task.surrogate_cost_seconds = 2.0;  // each trained surrogate child costs 2 model-seconds
  config.governance.red_lines.compute_budget_model_seconds = 5.0;
  config.governance.gates.max_gain = 0.01;
  GovernanceController gov(config);
  gov.add_events({GovernanceEvent{0, "red_line", 9, "refused", "rsi", ""}});

  const std::vector<ModelRecord> before = {trained_model(1, 0, 10), trained_model(2, 0, 10)};
  const std::vector<ModelRecord> after = {trained_model(2, 0, 10), trained_model(3, 1, 10)};
  GenerationRecord g1;
  g1.generation = 1;
  g1.gain = 0.05;  // over the gate
  g1.children = {trained_model(3, 1, 10), trained_model(4, 1, 10)};
  g1.population_models = after;
  g1.population = {2, 3};
  gov.govern(g1, true, before, after);
  EXPECT_DOUBLE_EQ(g1.model_seconds, gov.model_seconds());
  EXPECT_GT(gov.model_seconds(), 0.0);
  std::vector<std::string> kinds;
  for (const auto& e : g1.events) kinds.push_back(e.kind);
  EXPECT_EQ(kinds.front(), "red_line") << "queued events come first";
  EXPECT_TRUE(std::count(kinds.begin(), kinds.end(), "gate"));
  EXPECT_EQ(g1.status, GovernanceController::kAwaitingApproval);
  EXPECT_EQ(g1.held_for_rollback, (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(g1.population, (std::vector<std::uint64_t>{1, 2, 3}));
  ASSERT_EQ(gov.history().size(), 1u);
  EXPECT_TRUE(gov.history().back().children.empty()) << "the history keeps summaries only";

  // Until the budget is spent, no budget event; the generation that spends it gets exactly one.
  int budget_events = 0;
  for (int g = 2; g < 6; ++g) {
    GenerationRecord r;
    r.generation = g;
    r.children = {trained_model(10 + g, g, 10)};
    gov.govern(r, true, after, after);
    budget_events += static_cast<int>(std::count_if(r.events.begin(), r.events.end(),
                                                    [](const GovernanceEvent& e) { return e.kind == "budget"; }));
  }
  EXPECT_TRUE(gov.budget_spent());
  EXPECT_EQ(budget_events, 1);
}

TEST(GovernanceController, DecisionsAreQueuedForTheNextRecordAndResumeFindsTheGate) {
  LoopConfig config = base_config();
  config.governance.gates.on_reject = GateConfig::OnReject::Stop;
  GovernanceController gov(config);
  Decision no;
  no.approved = false;
  no.reason = "too fast";
  no.who = "ana@lab";
  EXPECT_TRUE(gov.record_decision(3, no)) << "on_reject: stop ends the run";
  GenerationRecord next;
  next.generation = 4;
  gov.govern(next, false, {}, {});
  ASSERT_EQ(next.events.size(), 1u) << "a decision-only record gets no alerts or gates";
  EXPECT_EQ(next.events[0].kind, "rejected");
  EXPECT_NE(next.events[0].reason.find("too fast; population rolled back to the one before generation 3"),
            std::string::npos)
      << next.events[0].reason;

  GenerationRecord gated, earlier;
  earlier.generation = 0;
  gated.generation = 1;
  gated.status = GovernanceController::kAwaitingApproval;
  gated.model_seconds = 12.5;
  GovernanceController resumed(config);
  EXPECT_EQ(resumed.restore({earlier, gated}, 1), std::optional<int>(1));
  EXPECT_DOUBLE_EQ(resumed.model_seconds(), 12.5);
  GovernanceController other(config);
  EXPECT_EQ(other.restore({earlier}, 0), std::nullopt);

  // No decision within the timeout: the summary says the generation awaits approval.
  config.governance.gates.approval_timeout_seconds = 0.01;
  GovernanceController waiting(config);
  LoopSummary summary;
  std::vector<bool> pending;
  LoopEvents events;
  events.on_approval_pending = [&pending](int, bool p) { pending.push_back(p); };
  EXPECT_EQ(waiting.await_decision(1, summary, events), std::nullopt);
  EXPECT_TRUE(summary.awaiting_approval);
  EXPECT_EQ(summary.awaiting_generation, 1);
  EXPECT_EQ(pending, (std::vector<bool>{true, false}));
}

}  // namespace
