// A small persistent thread pool for the t-SNE CPU kernels.
//
// Why not OpenMP: an optimisation step is a handful of short parallel loops separated by torch
// calls, thousands of times. libgomp's default policy leaves idle workers spinning between
// loops, which on a shared or oversubscribed machine starves the calling thread (measured here:
// 4x slower t-SNE iterations under load unless OMP_WAIT_POLICY=PASSIVE is set before torch is
// imported). These workers sleep on a condition variable instead, and the caller never waits for
// one that has not woken up (see run). Tasks are taken from an atomic counter; each task writes
// only its own outputs, so results do not depend on the thread count or the schedule.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace em {
namespace tsne {

class Pool {
 public:
  // Threads: EM_ACCEL_NUM_THREADS, else OpenMP's max threads (OMP_NUM_THREADS), else the cores.
  static Pool& get() {
    static Pool* pool = nullptr;
    static std::mutex m;
    std::lock_guard<std::mutex> lock(m);
    if (pool == nullptr || pool->pid_ != getpid()) pool = new Pool(default_threads());  // fork: new pool
    return *pool;
  }

  int threads() const { return int(workers_.size()) + 1; }

  // Calls f(t) for every t in [0, n_tasks), the caller's thread included; returns when all are done.
  // The caller waits only for tasks a worker has started, never for a worker that has not woken
  // up yet: on a loaded machine a sleeping worker may not get a core for milliseconds, and the
  // caller then simply takes its tasks. A late worker finds its job's counter exhausted and never
  // calls f (each job has its own counters, held by shared_ptr).
  void run(int64_t n_tasks, const std::function<void(int64_t)>& f) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) f(t);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mutex_);  // one job at a time
    auto job = std::make_shared<Job>(&f, n_tasks);
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = job;
      ++generation_;
    }
    cv_.notify_all();
    work(*job);
    std::unique_lock<std::mutex> lock(m_);
    done_cv_.wait(lock, [&] { return job->done.load() == job->n; });
    job_.reset();
  }

 private:
  explicit Pool(int n) : pid_(getpid()) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { loop(); });
    for (auto& w : workers_) w.detach();  // lives for the process; never joined at exit
  }

  static int default_threads() {
    if (const char* s = std::getenv("EM_ACCEL_NUM_THREADS")) {
      const int n = std::atoi(s);
      if (n >= 1) return n;
    }
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    const unsigned h = std::thread::hardware_concurrency();
    return h ? int(h) : 1;
#endif
  }

  struct Job {
    Job(const std::function<void(int64_t)>* f_, int64_t n_) : f(f_), n(n_) {}
    const std::function<void(int64_t)>* f;
    int64_t n;
    std::atomic<int64_t> next{0}, done{0};
  };

  void work(Job& job) {
    for (int64_t t = job.next.fetch_add(1); t < job.n; t = job.next.fetch_add(1)) {
      (*job.f)(t);
      if (job.done.fetch_add(1) + 1 == job.n) {
        std::lock_guard<std::mutex> lock(m_);
        done_cv_.notify_all();
      }
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (job) work(*job);
    }
  }

  pid_t pid_;
  std::vector<std::thread> workers_;
  std::mutex m_, run_mutex_;
  std::condition_variable cv_, done_cv_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
};

// parallel_for over [0, n) in chunks of `grain` items: f(begin, end).
template <class F> void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  grain = grain < 1 ? 1 : grain;
  const int64_t tasks = (n + grain - 1) / grain;
  if (tasks == 1) { f(int64_t(0), n); return; }
  Pool::get().run(tasks, [&](int64_t t) {
    const int64_t b = t * grain, e = (b + grain < n) ? b + grain : n;
    f(b, e);
  });
}

}  // namespace tsne
}  // namespace em
