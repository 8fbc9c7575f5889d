// Readers for the offline commands: NumPy .npy (v1-3, little/big endian, C or Fortran order,
// float16/32/64, int8-64, uint8-64, bool) and CSV. Hostile files give an ArrayError naming the
// file and what is wrong (with line:column for CSV); nothing is trusted before it is checked.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mltap::detectors {

class ArrayError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Matrix {
  std::vector<double> values;  // rows x cols, row-major
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<std::string> names;         // CSV header (may be empty)
  std::string dtype = "float64";          // numpy name of the source type
  std::vector<std::uint32_t> row_shape;   // shape of one row (npy with ndim > 2)
};

inline constexpr std::uint64_t kMaxArrayValues = 1ULL << 34;  // 128 GiB of doubles: refuse beyond

Matrix parse_npy(std::string_view bytes, const std::string& origin);
Matrix read_npy(const std::string& path);

struct CsvOptions {
  char delimiter = ',';
  enum class Header { automatic, present, absent } header = Header::automatic;
  std::size_t skip_rows = 0;
};
Matrix parse_csv(std::string_view text, const std::string& origin, const CsvOptions& options = {});
Matrix read_csv(const std::string& path, const CsvOptions& options = {});

// By extension: .npy or .csv (else an error).
Matrix read_array(const std::string& path);
// Writes a float64 C-order .npy (tests, benchmarks).
void write_npy(const std::string& path, const Matrix& m);

}  // namespace mltap::detectors
