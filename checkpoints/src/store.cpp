// LineageStore: writes one generation file per GenerationRecord (see FORMAT.md). The generation
// file holds the lineage metadata of every child, the population after selection with its weights,
// and the hash chain; the weights of the other children go to a sidecar gen-N.weights.h5 that is
// deleted once it leaves the last-K window. Files are written under a .tmp name, fsynced, renamed
// into place and the directory fsynced: a generation is durable once its file has its final name.
// The whole-file SHA-256 and LATEST are an integrity layer over durable files (the hash chain is
// computed before writing): they finish on a background thread, so that on_generation costs about
// what writing the bytes with fsync costs.
#include "rsi/checkpoints/store.h"
#include "rsi/kernels/report.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5.h"
#include "layout.h"

namespace rsi::checkpoints {

namespace fs = std::filesystem;
using scheduler::GenerationRecord;
using scheduler::ModelRecord;

namespace {

// A model ready to be written: its storable record, its parents' hashes and its digests.
struct Prepared {
  ModelRecord record;
  std::vector<std::string> parent_hashes;
  detail::ModelHashes hashes;
};

// The loop sets weights_digest with the weights; a record without one gets it here. (A wrong digest
// is not recomputed here, a full pass over the weights: verify_run reports it from the stored bytes.)
void fill_weights_digest(ModelRecord& m, int format_version) {
  if (m.weights && m.weights_digest.empty())
    m.weights_digest = scheduler::weights_digest(*m.weights, format_version == 1);
}

// The generation's summary: every field but the models (FORMAT.md's root attributes).
GenerationRecord summary_of(const GenerationRecord& r) {
  GenerationRecord s = r;
  s.children.clear();
  s.population_models.clear();
  return s;
}

std::uint64_t size_of(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<std::uint64_t>(n);
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

// Fault injection for tests/integration/kill_resume.sh: RSI_FAULT_KILL_DURING_CHECKPOINT=N kills
// this process with SIGKILL once gen-N.h5.tmp is written and closed, before it is renamed: a crash
// in the middle of a checkpoint.
void fault_kill_during_checkpoint(int generation) {
  const char* v = std::getenv("RSI_FAULT_KILL_DURING_CHECKPOINT");
  if (v && *v && std::atoi(v) == generation) std::raise(SIGKILL);
}

// RSI_FAULT_KILL_BEFORE_LATEST=N kills it once gen-N.h5 is durable and hashed, before the background
// work updates LATEST: the window in which LATEST lags one generation behind.
void fault_kill_before_latest(int generation) {
  const char* v = std::getenv("RSI_FAULT_KILL_BEFORE_LATEST");
  if (v && *v && std::atoi(v) == generation) std::raise(SIGKILL);
}

// The CPUs this process may run on (taskset, cgroups' cpusets, Slurm's binding), not the machine's:
// more hashing threads than that only interleave, and the first digests come last.
std::size_t usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<std::size_t>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Runs tasks in the order given on a few threads, so that the first results are ready first: the
// writer takes model i's digests while model i+1's are still being computed. Every task has run
// (or failed) when the pool is destroyed, so the tasks may refer to locals declared before it.
class OrderedPool {
 public:
  explicit OrderedPool(std::vector<std::function<void()>> tasks) : tasks_(std::move(tasks)) {
    for (std::size_t i = 0; i < tasks_.size(); ++i) done_.push_back(promises_.emplace_back().get_future().share());
    const std::size_t threads = std::min(usable_cpus(), tasks_.size());
    for (std::size_t t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  OrderedPool(const OrderedPool&) = delete;
  OrderedPool& operator=(const OrderedPool&) = delete;
  ~OrderedPool() {
    next_ = tasks_.size();  // on an error, the tasks not yet started are skipped
    for (std::thread& w : workers_) w.join();
  }
  // Waits for task i (any number of times); rethrows what it threw.
  void wait(std::size_t i) { done_[i].get(); }

 private:
  void work() {
    for (std::size_t i = next_++; i < tasks_.size(); i = next_++) {
      try {
        tasks_[i]();
        promises_[i].set_value();
      } catch (...) {
        promises_[i].set_exception(std::current_exception());
      }
    }
  }
  std::vector<std::function<void()>> tasks_;
  std::deque<std::promise<void>> promises_;  // a deque: promises never move once their future is taken
  std::vector<std::shared_future<void>> done_;
  std::atomic<std::size_t> next_{0};
  std::vector<std::thread> workers_;
};

// The SHA-256 of a whole file, hashed straight from the page cache through a read-only mapping
// (no copy into a buffer). The descriptor is opened at once, so a rename afterwards does not matter.
class MappedFileDigest {
 public:
  explicit MappedFileDigest(const fs::path& file) : fd_(::open(file.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw CheckpointError("cannot open to hash: " + std::string(std::strerror(errno)));
  }
  MappedFileDigest(const MappedFileDigest&) = delete;
  MappedFileDigest& operator=(const MappedFileDigest&) = delete;
  ~MappedFileDigest() { ::close(fd_); }
  std::string sha256() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw CheckpointError("cannot stat to hash: " + std::string(std::strerror(errno)));
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0) return detail::sha256_hex("", 0);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd_, 0);
    if (map == MAP_FAILED) throw CheckpointError("cannot map to hash: " + std::string(std::strerror(errno)));
    ::madvise(map, size, MADV_SEQUENTIAL);
    try {
      std::string digest = detail::sha256_hex(map, size);
      ::munmap(map, size);
      return digest;
    } catch (...) {
      ::munmap(map, size);
      throw;
    }
  }

 private:
  int fd_;
};

// Closes `file` (flushing HDF5's metadata), then commits `tmp` to `final` (fsync, rename, directory
// fsync) and returns the SHA-256 of its bytes, hashed on a second thread while this one waits for
// fsync. For the sidecar, whose digest the generation file records.
std::string close_commit_and_hash(h5::Handle& file, const fs::path& tmp, const fs::path& final) {
  file.close("closing the file");
  const MappedFileDigest bytes(tmp);
  auto digest = std::async(std::launch::async, [&bytes] { return bytes.sha256(); });
  try {
    detail::commit(tmp, final);
  } catch (...) {
    digest.wait();
    throw;
  }
  return digest.get();
}

}  // namespace

LineageStore::LineageStore(fs::path dir, RunInfo info, Retention retention, const ResumePoint& resume)
    : dir_(std::move(dir)), info_(std::move(info)), retention_(retention) {
  h5::silence();
  if (retention_.keep_last_generations < 0)
    throw CheckpointError("checkpoints.keep_last_generations is " + std::to_string(retention_.keep_last_generations) +
                          ": it must be 0 (keep every generation's weights) or a positive number of generations");
  for (std::string* s : {&info_.run_name, &info_.manifest_text, &info_.manifest_hash, &info_.program_version,
                         &info_.git_commit, &info_.hosts, &info_.cpu_kernels, &info_.cuda_settings,
                         &info_.start_time})
    *s = detail::storable(*s);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw CheckpointError(dir_.string() + ": cannot create the run directory: " + ec.message());

  // Leftovers of an interrupted write were never durable: remove them. Sidecars past the resume
  // point belong to generations that will be written again.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 &&
                     (name.rfind("gen-", 0) == 0 || name == "LATEST.tmp");
    const auto sidecar = detail::sidecar_generation_of(entry.path());
    if (tmp || (sidecar && *sidecar > resume.generation)) stale.push_back(entry.path());
  }
  for (const auto& p : stale) remove_quietly(p);

  chain_head_ = resume.generation_hash;
  format_version_ = resume.format_version;
  summary_revision_ = resume.summary_revision >= 0 ? resume.summary_revision : scheduler::current_summary_revision();
  if (summary_revision_ > scheduler::current_summary_revision())
    throw CheckpointError("summary revision " + std::to_string(summary_revision_) + " is newer than this rsi writes (" +
                          std::to_string(scheduler::current_summary_revision()) + "): use a newer rsi");
  if (format_version_ < 1 || format_version_ > detail::kFormatVersion)
    throw CheckpointError("lineage format version " + std::to_string(format_version_) + " is not one this rsi writes");
  if (resume.generation < 0) return;
  const fs::path file = dir_ / detail::generation_file_name(resume.generation);
  try {
    h5::Handle f = h5::open_file(file.string());
    const detail::Root root = detail::read_root(f.get());
    if (!resume.generation_hash.empty() && root.generation_hash != resume.generation_hash)
      throw CheckpointError("its generation hash " + root.generation_hash + " is not the resume point's " +
                            resume.generation_hash + "; call find_resume_point again");
    h5::Handle pop = h5::open_group(f.get(), "population");
    for (std::uint64_t id : root.summary.population) {
      h5::Handle g = h5::open_group(pop.get(), std::to_string(id));
      provenance_[id] = {h5::read_string(g.get(), "provenance_hash"), h5::read_strings(g.get(), "parent_hashes")};
    }
    chain_head_ = root.generation_hash;
    format_version_ = root.format_version;  // a lineage goes on in the format it started in
    summary_revision_ = root.summary_revision;  // ... and with the summary fields it started with
    population_ = root.summary.population;
    last_generation_ = resume.generation;
    last_file_sha256_ = detail::file_sha256(file);
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": cannot resume after this generation: " + e.what());
  }
}

LineageStore::~LineageStore() {
  // A destructor cannot throw: an error nobody has seen still reaches the operator (LATEST may lag
  // behind the newest generation file, which find_resume_point handles).
  on_finish();
}

void LineageStore::flush() { join_background(); }

void LineageStore::on_finish() {
  try {
    join_background();
  } catch (const std::exception& e) {
    if (!background_error_printed_) kernels::report_error(std::string("lineage store: ") + e.what());
    background_error_printed_ = true;
  }
}

void LineageStore::join_background() {
  if (background_.valid()) {
    try {
      last_file_sha256_ = background_.get();
    } catch (const std::exception& e) {
      background_error_ = e.what();
    }
  }
  if (!background_error_.empty())
    throw CheckpointError(background_error_ +
                          " (the generation file itself is durable; LATEST may name an older generation: resume "
                          "the run, find_resume_point checks the files themselves)");
}

// One generation being written: its models prepared and hashed (on a pool of threads, in the
// order they are written), then the sidecar and the generation file.
struct LineageStore::Write {
  explicit Write(const GenerationRecord& r) : record(r), g(r.generation) {}
  const GenerationRecord& record;
  int g;
  std::string name, where;
  fs::path final_path;
  std::vector<Prepared> children;  // in id order, with their parents' hashes
  std::map<std::uint64_t, const Prepared*> child_by_id;
  std::vector<Prepared> carried;                 // population members carried over
  std::vector<const Provenance*> carried_known;  // what the previous generation recorded for each
  std::set<std::uint64_t> in_population;
  std::vector<std::size_t> sidecar_children;  // indices into children, in id order
  std::vector<std::size_t> child_task;        // each child's index in the hashing pool
  std::optional<OrderedPool> hashing;
  std::map<std::uint64_t, Provenance> next_provenance;
  std::string sidecar_sha256;
  std::uint64_t bytes = 0;
  detail::Root root;
};

// Children, in id order, with their parents' hashes from the previous population.
void LineageStore::prepare_children(Write& w) const {
  for (const ModelRecord& c : w.record.children) w.children.push_back({detail::storable(c), {}, {}});
  std::sort(w.children.begin(), w.children.end(),
            [](const Prepared& a, const Prepared& b) { return a.record.id < b.record.id; });
  for (Prepared& c : w.children) {
    ModelRecord& m = c.record;
    if (w.child_by_id.count(m.id))
      throw CheckpointError(w.where + ": model " + std::to_string(m.id) + " appears twice among the children");
    for (std::uint64_t p : m.parents) {
      const auto it = provenance_.find(p);
      if (it == provenance_.end())
        throw CheckpointError(w.where + ": model " + std::to_string(m.id) + ": parent " + std::to_string(p) +
                              " is not in the population of generation " + std::to_string(w.g - 1) +
                              "; the lineage cannot link it");
      c.parent_hashes.push_back(it->second.hash);
    }
    w.child_by_id[m.id] = &c;
  }
}

// The population after selection: new children (linked) and members carried over.
void LineageStore::prepare_population(Write& w) const {
  std::map<std::uint64_t, const ModelRecord*> population_records;
  for (const ModelRecord& m : w.record.population_models) population_records[m.id] = &m;
  for (std::uint64_t id : w.record.population) {
    if (!w.in_population.insert(id).second)
      throw CheckpointError(w.where + ": model " + std::to_string(id) + " appears twice in the population");
    if (w.child_by_id.count(id)) continue;
    const auto known = provenance_.find(id);
    const auto rec = population_records.find(id);
    if (known == provenance_.end())
      throw CheckpointError(w.where + ": population member " + std::to_string(id) +
                            " is neither a child of generation " + std::to_string(w.g) +
                            " nor in the population of generation " + std::to_string(w.g - 1));
    if (rec == population_records.end())
      throw CheckpointError(w.where + ": population member " + std::to_string(id) +
                            " has no record in population_models (the loop must hand over the population's records)");
    w.carried.push_back(Prepared{detail::storable(*rec->second), known->second.parent_hashes, {}});
    w.carried_known.push_back(&known->second);
  }
  for (std::size_t i = 0; i < w.children.size(); ++i)
    if (w.children[i].record.weights && !weights_in_main(w, w.children[i].record)) w.sidecar_children.push_back(i);
}

// Children that are in the population keep their weights in the generation file.
bool LineageStore::weights_in_main(const Write& w, const ModelRecord& m) const {
  return retention_.keep_population && m.weights && w.in_population.count(m.id) > 0;
}

// The weights' SHA-256 is the bulk of the work: it runs on a pool of threads, in the order the
// models are written, while this thread writes the models whose digests are ready. Carried members
// come first (usually not hashed again: their digests are reused), then the sidecar's children,
// then the other children in id order.
void LineageStore::start_hashing(Write& w) {
  std::vector<std::function<void()>> tasks;
  w.child_task.resize(w.children.size());
  for (std::size_t j = 0; j < w.carried.size(); ++j)
    tasks.emplace_back([this, &p = w.carried[j]] {
      fill_weights_digest(p.record, format_version_);
      // A member carried over unchanged (the same weights object) is not hashed again: the weight
      // digests it had are reused through `stored`.
      const auto cached = weight_digests_.find(p.record.id);
      if (cached != weight_digests_.end() && p.record.weights && cached->second.weights == p.record.weights.get()) {
        detail::ModelHashes known_digests;
        known_digests.params = cached->second.params;
        known_digests.state = cached->second.state;
        const auto weights = std::move(p.record.weights);
        p.hashes = detail::field_hashes(p.record, &known_digests);
        p.record.weights = weights;
      } else {
        p.hashes = detail::field_hashes(p.record);
      }
      p.hashes.provenance = detail::provenance_hash(p.record, p.hashes, p.parent_hashes);
    });
  auto add_child_task = [&](std::size_t i) {
    w.child_task[i] = tasks.size();
    tasks.emplace_back([this, &c = w.children[i]] {
      fill_weights_digest(c.record, format_version_);
      c.hashes = detail::field_hashes(c.record);
      c.hashes.provenance = detail::provenance_hash(c.record, c.hashes, c.parent_hashes);
    });
  };
  for (std::size_t i : w.sidecar_children) add_child_task(i);
  for (std::size_t i = 0; i < w.children.size(); ++i)
    if (std::find(w.sidecar_children.begin(), w.sidecar_children.end(), i) == w.sidecar_children.end())
      add_child_task(i);
  w.hashing.emplace(std::move(tasks));
}

// A carried member must be the model recorded earlier: checked before anything is written.
void LineageStore::check_carried(Write& w) {
  for (std::size_t j = 0; j < w.carried.size(); ++j) {
    w.hashing->wait(j);
    const Prepared& p = w.carried[j];
    if (p.hashes.provenance != w.carried_known[j]->hash)
      throw CheckpointError(w.where + ": population member " + std::to_string(p.record.id) +
                            " differs from the model written earlier (provenance " + p.hashes.provenance +
                            ", recorded " + w.carried_known[j]->hash +
                            "); the loop changed a model after it was recorded");
    w.next_provenance[p.record.id] = *w.carried_known[j];
  }
}

// 1. The sidecar (before the generation file, so that a durable generation has its sidecar).
void LineageStore::write_sidecar(Write& w) {
  if (w.sidecar_children.empty()) return;
  const fs::path side = dir_ / detail::sidecar_file_name(w.g);
  const fs::path tmp = side.string() + ".tmp";
  try {
    h5::Handle f = h5::create_file(tmp.string());
    h5::write_string(f.get(), "format", detail::kSidecarFormatName);
    h5::write_int(f.get(), "format_version", format_version_);
    h5::write_int(f.get(), "generation", w.g);
    h5::write_string(f.get(), "generation_file", w.name);
    h5::Handle models = h5::create_group(f.get(), "models");
    std::uint64_t queued = 0;  // bytes handed to writeback
    for (std::size_t i : w.sidecar_children) {
      const Prepared& c = w.children[i];
      try {
        w.hashing->wait(w.child_task[i]);
        detail::write_sidecar_model(models.get(), c.record, c.hashes);
        queued = h5::start_writeback(f.get(), queued);
      } catch (const CheckpointError& e) {
        throw CheckpointError("model " + std::to_string(c.record.id) + ": " + e.what());
      }
    }
    models.reset();
    w.sidecar_sha256 = close_commit_and_hash(f, tmp, side);
  } catch (const CheckpointError& e) {
    remove_quietly(tmp);
    throw CheckpointError(tmp.string() + ": " + e.what());
  }
  w.bytes += size_of(side);
}

// 2. The generation file: the models as their digests come in, then the root attributes, which
// hold the generation hash over all of them.
void LineageStore::write_generation_file(Write& w) {
  const fs::path tmp = w.final_path.string() + ".tmp";
  try {
    h5::Handle f = h5::create_file(tmp.string());
    write_children(w, f.get());
    write_population(w, f.get());
    detail::Root& root = w.root;
    root.format_version = format_version_;
    root.run = info_;
    root.retention = retention_;
    root.summary_revision = summary_revision_;
    root.summary = summary_of(w.record);
    scheduler::drop_fields_after(root.summary, summary_revision_);
    root.summary_sha256 = detail::summary_digest(root.summary);
    root.previous_file_sha256 = last_file_sha256_;
    root.sidecar_sha256 = w.sidecar_sha256;
    root.run_sha256 = detail::run_digest(root);
    root.previous_hash = chain_head_;
    std::vector<detail::IdHash> child_hashes, population_hashes;
    for (const Prepared& c : w.children) child_hashes.push_back({c.record.id, c.hashes.provenance});
    for (const auto& [id, p] : w.next_provenance) population_hashes.push_back({id, p.hash});
    root.generation_hash =
        detail::generation_hash(w.g, chain_head_, child_hashes, population_hashes, root.summary_sha256);
    detail::write_root(f.get(), root);
    f.close("closing the file");
    fault_kill_during_checkpoint(w.g);
    detail::commit(tmp, w.final_path);
  } catch (const CheckpointError& e) {
    remove_quietly(tmp);
    throw CheckpointError(tmp.string() + ": " + e.what());
  }
  w.bytes += size_of(w.final_path);
}

void LineageStore::write_children(Write& w, hid_t file) {
  h5::Handle models = h5::create_group(file, "models");
  std::uint64_t queued = 0;  // bytes handed to writeback
  for (std::size_t i = 0; i < w.children.size(); ++i) {
    const Prepared& c = w.children[i];
    try {
      w.hashing->wait(w.child_task[i]);
      detail::write_model(models.get(), std::to_string(c.record.id), c.record, c.parent_hashes, c.hashes,
                          weights_in_main(w, c.record), info_.input);
      // The disk writes this model while the next is hashed and copied (dd's fsync waits for
      // every byte at the end; ours then waits only for the last model's).
      queued = h5::start_writeback(file, queued);
    } catch (const CheckpointError& e) {
      throw CheckpointError("model " + std::to_string(c.record.id) + ": " + e.what());
    }
    if (w.in_population.count(c.record.id)) w.next_provenance[c.record.id] = {c.hashes.provenance, c.parent_hashes};
  }
}

void LineageStore::write_population(Write& w, hid_t file) const {
  h5::Handle population = h5::create_group(file, "population");
  for (std::uint64_t id : w.record.population)
    if (w.child_by_id.count(id)) h5::hard_link(file, "models/" + std::to_string(id), population.get(), std::to_string(id));
  for (const Prepared& p : w.carried) {
    try {
      detail::write_model(population.get(), std::to_string(p.record.id), p.record, p.parent_hashes, p.hashes,
                          retention_.keep_population, info_.input);
    } catch (const CheckpointError& e) {
      throw CheckpointError("population model " + std::to_string(p.record.id) + ": " + e.what());
    }
  }
}

// 3. In the background: the file's SHA-256 (for LATEST and the next generation's file), then
// LATEST. The file is durable and complete already; a crash before LATEST is updated leaves LATEST
// one generation behind, which find_resume_point handles (it checks the files, newest first).
void LineageStore::start_background(const Write& w) {
  auto digest_and_latest = [dir = dir_, final_path = w.final_path, g = w.g, hash = w.root.generation_hash] {
    std::string digest;
    try {
      digest = MappedFileDigest(final_path).sha256();
    } catch (const std::exception& e) {
      throw CheckpointError(final_path.string() + ": " + e.what());
    }
    fault_kill_before_latest(g);
    try {
      detail::write_file_durably(dir / "LATEST", detail::latest_text(g, hash, digest));
    } catch (const std::exception& e) {
      throw CheckpointError((dir / "LATEST").string() + ": cannot record generation " + std::to_string(g) + ": " +
                            e.what());
    }
    return digest;
  };
  try {
    background_ = std::async(std::launch::async, digest_and_latest);
  } catch (const std::system_error&) {
    background_ = std::async(std::launch::deferred, digest_and_latest);  // no thread: done at the join
  }
}

// 4. Retention: sidecars that left the last-K window.
void LineageStore::expire_sidecars(int g) const {
  if (retention_.keep_last_generations <= 0) return;
  std::error_code ec;
  std::vector<fs::path> expired;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const auto side = detail::sidecar_generation_of(entry.path());
    if (side && *side <= g - retention_.keep_last_generations) expired.push_back(entry.path());
  }
  for (const auto& p : expired) remove_quietly(p);
}

// 5. The chain head, the population's provenance and weight digests for the next generation.
void LineageStore::advance(Write& w) {
  chain_head_ = w.root.generation_hash;
  provenance_ = std::move(w.next_provenance);
  std::map<std::uint64_t, WeightDigests> digests;
  for (const Prepared& c : w.children)
    if (provenance_.count(c.record.id) && c.record.weights)
      digests[c.record.id] = {c.record.weights.get(), c.hashes.params, c.hashes.state};
  for (const Prepared& p : w.carried)
    if (p.record.weights) digests[p.record.id] = {p.record.weights.get(), p.hashes.params, p.hashes.state};
  weight_digests_ = std::move(digests);
  population_ = w.record.population;
  last_generation_ = w.g;
  last_bytes_ = w.bytes;
}

void LineageStore::on_generation(const GenerationRecord& record) {
  const auto start = std::chrono::steady_clock::now();
  // This file records the previous file's SHA-256, and LATEST must advance in order.
  join_background();
  h5::silence();
  Write w(record);
  w.name = detail::generation_file_name(w.g);
  w.final_path = dir_ / w.name;
  w.where = w.final_path.string();
  if (w.g != last_generation_ + 1)
    throw CheckpointError(w.where + ": generation " + std::to_string(w.g) +
                          " handed to the lineage store after generation " + std::to_string(last_generation_) +
                          "; generations must be written in order without gaps");
  prepare_children(w);
  prepare_population(w);
  start_hashing(w);
  check_carried(w);
  write_sidecar(w);
  write_generation_file(w);
  start_background(w);
  expire_sidecars(w.g);
  advance(w);
  last_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace rsi::checkpoints
