// The learned designer: a model the loop trains on its own lineage, from (parent, proposed child) to
// the validation gain the child achieved, and that parents consult to screen candidate designs
// before any is trained (design.h's "screen" gene weighs how much they lean on it).
//
// It is ridge regression on a fixed feature vector (design_features), fitted from sufficient
// statistics (XᵀX, Xᵀy) accumulated in model-id order, so its state after generation g is a pure
// function of the hash-chained lineage up to g: a resume rebuilds it from the stored children and
// gets the same bits. It sees validation figures only; nothing it reads comes from the hidden test
// set (tests/unit/test_predictor.cpp proves it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

// Features of a design: a bias, the operator (one-hot over design_operators()), the parent's
// validation accuracy, and the child's and the parent's shape and recipe (log parameters, log
// FLOPs, convolutions, residual blocks, pools, dense blocks, batch norms, epochs, distillation
// epochs, log learning rate and its distance from 1e-3, augmentation, schedule), each scaled to
// about unit size.
// Sizes (parameters, FLOPs) are those on `input`, the task's images.
std::vector<double> design_features(const models::Genome& parent, double parent_val_accuracy,
                                    const models::Genome& child, const std::string& op,
                                    const models::InputSpec& input = {});
std::size_t design_feature_count();

class GainPredictor {
 public:
  explicit GainPredictor(double ridge = 1.0);
  // One example: a trained child's features and its validation gain over its parent.
  void add(const std::vector<double>& features, double gain);
  // Solves (XᵀX + ridge·I) w = Xᵀy (the bias unpenalised) by Cholesky in double precision.
  void fit();
  double predict(const std::vector<double>& features) const;
  std::size_t examples() const { return examples_; }
  bool fitted() const { return fitted_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  double ridge_;
  std::size_t examples_ = 0;
  bool fitted_ = false;
  std::vector<double> xtx_, xty_, weights_;
};

// Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant side.
double rank_correlation(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace rsi::scheduler
