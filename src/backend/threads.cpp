#include "backend/threads.h"

#include <cblas.h>
#include <omp.h>

#include "core/error.h"

namespace loracpp {

void set_num_threads(int threads) {
  check(threads >= 1, "threads", "thread count must be at least 1, got {}", threads);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace loracpp
