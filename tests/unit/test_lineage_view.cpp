// Tests of the lineage view of `rsi lineage` and `rsi report` (runtime/src/lineage_view.h) on lineages
// built by hand: dead branches folded into "+N others", the best path with its crossover mates, the
// selections (--best-path, --population, --last K, --all), the bounds (36 models per generation row,
// the best path first; 24 generation rows, the middle ones folded) and edges drawn from the group
// that holds a parent. The same rules at scale: tests/integration/lineage_scale.sh.
//   build-dir/tests/test_lineage_view            (well under a second)
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../../runtime/src/lineage_view.h"

namespace {

using rsi::runtime::LineageView;
using rsi::runtime::LineageViewOptions;
using rsi::runtime::ViewNode;
using Status = rsi::scheduler::ModelRecord::Status;

struct Lineage {
  rsi::runtime::RunLineage run;

  void model(std::uint64_t id, int generation, std::vector<std::uint64_t> parents, double val,
             Status status = Status::Trained) {
    auto& r = run.models[id].record;
    r.id = id;
    r.generation = generation;
    r.op = parents.empty() ? "seed" : parents.size() > 1 ? "crossover" : "widen";
    r.parents = std::move(parents);
    r.status = status;
    r.metrics.val_accuracy = val;
    r.metrics.test_accuracy = val - 0.01;
  }
  // One generation record per generation 0..last; the last one's population; the best model.
  void finish(int last, std::vector<std::uint64_t> population, std::uint64_t best) {
    for (int g = 0; g <= last; ++g) {
      run.generations.emplace_back();
      run.generations.back().generation = g;
    }
    run.generations.back().population = std::move(population);
    run.best_id = best;
  }
};

const ViewNode* node(const LineageView& v, const std::string& key) {
  const auto it = std::find_if(v.nodes.begin(), v.nodes.end(), [&](const ViewNode& n) { return n.key == key; });
  return it == v.nodes.end() ? nullptr : &*it;
}

std::vector<std::string> keys(const LineageView& v, std::size_t row) {
  std::vector<std::string> out;
  for (const auto i : v.rows[row].nodes) out.push_back(v.nodes[i].key);
  return out;
}

bool has_edge(const LineageView& v, const std::string& from, const std::string& to, bool mate, bool on_path) {
  return std::any_of(v.edges.begin(), v.edges.end(), [&](const auto& e) {
    return v.nodes[e.from].key == from && v.nodes[e.to].key == to && e.mate == mate && e.on_best_path == on_path;
  });
}

// gen 0: seeds 1, 2; gen 1: 3 and 4 of 1, 5 of 2 (failed); gen 2: 6 = crossover of 3 with mate 2, 7 of 4.
// Final population {6}, best 6: the path is 1 -> 3 -> 6 with mate 2; 4, 5 and 7 are dead branches.
Lineage small() {
  Lineage l;
  l.model(1, 0, {}, 0.50);
  l.model(2, 0, {}, 0.55);
  l.model(3, 1, {1}, 0.60);
  l.model(4, 1, {1}, 0.62);
  l.model(5, 1, {2}, 0.0, Status::Failed);
  l.model(6, 2, {3, 2}, 0.70);
  l.model(7, 2, {4}, 0.65);
  l.finish(2, {6}, 6);
  return l;
}

TEST(LineageView, DeadBranchesFoldIntoOthersPerGeneration) {
  const Lineage l = small();
  const LineageView v = rsi::runtime::build_lineage_view(l.run, {});
  ASSERT_EQ(v.rows.size(), 3u);
  EXPECT_EQ(keys(v, 0), (std::vector<std::string>{"m1", "m2"}));
  EXPECT_EQ(keys(v, 1), (std::vector<std::string>{"m3", "others_1"}));
  EXPECT_EQ(keys(v, 2), (std::vector<std::string>{"m6", "others_2"}));
  const ViewNode* others = node(v, "others_1");
  ASSERT_NE(others, nullptr);
  EXPECT_EQ(others->members, (std::vector<std::uint64_t>{4, 5}));
  EXPECT_EQ(others->trained, 1);
  EXPECT_EQ(others->failed, 1);
  EXPECT_DOUBLE_EQ(others->best_val, 0.62);
  EXPECT_TRUE(node(v, "m6")->on_best_path && node(v, "m6")->in_population);
  EXPECT_TRUE(node(v, "m2")->mate && !node(v, "m2")->on_best_path);
  EXPECT_EQ(v.drawn, 4u);
  EXPECT_EQ(v.folded, 3u);
  EXPECT_TRUE(has_edge(v, "m1", "m3", false, true));
  EXPECT_TRUE(has_edge(v, "m3", "m6", false, true));
  EXPECT_TRUE(has_edge(v, "m2", "m6", true, false));
  EXPECT_EQ(v.edges.size(), 3u);  // nothing into a group
  const std::string text = rsi::runtime::lineage_view_text(v, l.run);
  EXPECT_NE(text.find("* gen 2  model 6  crossover of 3 2  val 0.7000 test 0.6900  trained  [population]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  gen 1  +2 others (best val 0.6200, 1 failed)"), std::string::npos) << text;
}

TEST(LineageView, SelectionsAndAll) {
  const Lineage l = small();
  LineageViewOptions all;
  all.all = true;
  const LineageView everything = rsi::runtime::build_lineage_view(l.run, all);
  EXPECT_EQ(everything.drawn, 7u);
  EXPECT_EQ(everything.folded, 0u);
  EXPECT_TRUE(has_edge(everything, "m4", "m7", false, false));

  LineageViewOptions path;
  path.best_path = true;
  const LineageView p = rsi::runtime::build_lineage_view(l.run, path);
  EXPECT_EQ(p.selected, 4u);  // 1, 3, 6 and the mate 2
  EXPECT_EQ(p.drawn, 4u);
  EXPECT_EQ(node(p, "m4"), nullptr);

  LineageViewOptions population;
  population.population = true;
  EXPECT_EQ(rsi::runtime::build_lineage_view(l.run, population).selected, 4u);  // 6 and its ancestors
}

TEST(LineageView, LastFoldsEarlierGenerationsIntoOneNode) {
  const Lineage l = small();
  LineageViewOptions last;
  last.last = 1;
  const LineageView v = rsi::runtime::build_lineage_view(l.run, last);
  ASSERT_EQ(v.rows.size(), 2u);
  EXPECT_TRUE(v.rows[0].folded);
  EXPECT_EQ(v.rows[0].last_generation, 1);
  const ViewNode* earlier = node(v, "earlier_0_1");
  ASSERT_NE(earlier, nullptr);
  EXPECT_EQ(earlier->members, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(earlier->on_best_path);
  EXPECT_TRUE(has_edge(v, "earlier_0_1", "m6", false, true));
  EXPECT_TRUE(has_edge(v, "earlier_0_1", "m6", true, false));
  EXPECT_NE(rsi::runtime::lineage_view_dot(v, l.run).find("\u2026 5 earlier models\\nbest val 0.6200, 1 failed\""), std::string::npos);
}

// Generation 1: 60 children of seed 1; generation 2: one child of each, all in the final population.
// The best model (highest id) descends from the generation-1 model with the lowest validation accuracy.
TEST(LineageView, AtMost36ModelsPerRowThePathFirst) {
  Lineage l;
  l.model(1, 0, {}, 0.5);
  std::vector<std::uint64_t> population;
  for (std::uint64_t k = 0; k < 60; ++k) {
    l.model(100 + k, 1, {1}, 0.6 + 0.001 * static_cast<double>(k));
    l.model(200 + k, 2, {100 + (59 - k)}, 0.7 + 0.001 * static_cast<double>(k));
    population.push_back(200 + k);
  }
  l.finish(2, population, 259);
  const LineageView v = rsi::runtime::build_lineage_view(l.run, {});
  ASSERT_EQ(v.rows.size(), 3u);
  EXPECT_EQ(v.rows[1].nodes.size(), 37u);  // 36 models and "+24 others"
  EXPECT_NE(node(v, "m100"), nullptr);      // on the path though the lowest validation accuracy
  EXPECT_EQ(node(v, "m101"), nullptr);      // the next lowest: folded
  EXPECT_EQ(node(v, "others_1")->members.size(), 24u);
  EXPECT_NE(node(v, "m259"), nullptr);
  // Children of folded parents get their edge from the group.
  EXPECT_TRUE(has_edge(v, "others_1", "m258", false, false) || node(v, "m258") == nullptr);
  EXPECT_EQ(v.drawn + v.folded, l.run.models.size());
}

// 30 generations of one model each: 4 rows, generations 4..9 folded, then the last 20.
TEST(LineageView, AtMost24GenerationRowsTheMiddleFolded) {
  Lineage l;
  l.model(1, 0, {}, 0.5);
  for (std::uint64_t g = 1; g < 30; ++g) l.model(g + 1, static_cast<int>(g), {g}, 0.5 + 0.01 * static_cast<double>(g));
  l.finish(29, {30}, 30);
  const LineageView v = rsi::runtime::build_lineage_view(l.run, {});
  ASSERT_EQ(v.rows.size(), 25u);
  EXPECT_TRUE(v.rows[4].folded);
  EXPECT_EQ(v.rows[4].first_generation, 4);
  EXPECT_EQ(v.rows[4].last_generation, 9);
  EXPECT_EQ(node(v, "earlier_4_9")->members.size(), 6u);
  EXPECT_TRUE(has_edge(v, "earlier_4_9", "m11", false, true));
  EXPECT_TRUE(has_edge(v, "m3", "m4", false, true));
  LineageViewOptions all;
  all.all = true;
  EXPECT_EQ(rsi::runtime::build_lineage_view(l.run, all).rows.size(), 30u);
  const std::string json = rsi::runtime::lineage_view_json(v, l.run, "runs/x");
  EXPECT_NE(json.find("{\"id\": \"earlier_4_9\", \"kind\": \"earlier\", \"first_generation\": 4, \"last_generation\": 9, "
                      "\"count\": 6"),
            std::string::npos)
      << json;
}

}  // namespace
