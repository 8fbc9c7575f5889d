#include "agent/detectors/array_io.hpp"

#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sys/stat.h>

namespace mltap::detectors {
namespace {

std::string read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ArrayError(path + ": cannot read (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) throw ArrayError(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ArrayError(path + ": cannot read (" + std::strerror(errno) + ")");
  std::string data(static_cast<std::size_t>(st.st_size), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (in.gcount() != static_cast<std::streamsize>(data.size())) throw ArrayError(path + ": short read");
  return data;
}

// ---- the .npy header: a Python dict literal --------------------------------------------------
struct HeaderParser {
  std::string_view s;
  std::size_t i = 0;
  const std::string& origin;
  [[noreturn]] void fail(const std::string& what) const {
    throw ArrayError(origin + ": bad .npy header at offset " + std::to_string(i) + ": " + what);
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a quoted string");
    const char q = s[i++];
    const std::size_t b = i;
    while (i < s.size() && s[i] != q) {
      if (s[i] == '\\') fail("escapes are not supported");
      ++i;
    }
    if (i >= s.size()) fail("unterminated string");
    return std::string(s.substr(b, i++ - b));
  }
  bool boolean() {
    ws();
    if (s.substr(i, 4) == "True") { i += 4; return true; }
    if (s.substr(i, 5) == "False") { i += 5; return false; }
    fail("expected True or False");
  }
  std::vector<std::uint64_t> tuple() {
    if (!eat('(')) fail("expected a shape tuple");
    std::vector<std::uint64_t> out;
    while (true) {
      if (eat(')')) break;
      ws();
      std::uint64_t v = 0;
      auto [p, ec] = std::from_chars(s.data() + i, s.data() + s.size(), v);
      if (ec != std::errc() || p == s.data() + i) fail("expected a non-negative integer in the shape");
      i = static_cast<std::size_t>(p - s.data());
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long suffix
      out.push_back(v);
      if (out.size() > 32) fail("too many dimensions");
      if (eat(',')) continue;
      if (eat(')')) break;
      fail("expected ',' or ')' in the shape");
    }
    return out;
  }
};

double half_to_double(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v;
  if (exp == 0) v = std::ldexp(frac, -24);
  else if (exp == 31) v = frac ? NAN : INFINITY;
  else v = std::ldexp(frac + 1024, exp - 25);
  return sign ? -v : v;
}

template <typename T>
T load(const unsigned char* p, bool swap) {
  std::uint8_t b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) {
    for (std::size_t k = 0; k < sizeof(T) / 2; ++k) std::swap(b[k], b[sizeof(T) - 1 - k]);
  }
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

}  // namespace

namespace {

// `in_place`: the buffer that holds `bytes` (the whole file, from its first byte). When the data
// is little-endian float64 in C order (what numpy.save writes by default), it is moved to the
// front of that buffer, which becomes the matrix: no second copy of a large file, no per-value
// conversion (mltap profile build, docs/benchmarks.md).
Matrix parse_npy_impl(std::string_view bytes, const std::string& origin, std::vector<double>* in_place) {
  static constexpr char magic[] = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.substr(0, 6) != std::string_view(magic, 6)) throw ArrayError(origin + ": not a .npy file (bad magic)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) throw ArrayError(origin + ": unsupported .npy version " + std::to_string(major));
  std::size_t header_len, start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    start = 10;
  } else {
    if (bytes.size() < 12) throw ArrayError(origin + ": truncated .npy header");
    header_len = 0;
    for (int k = 3; k >= 0; --k) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + k]);
    start = 12;
  }
  if (header_len > (1u << 20) || start + header_len > bytes.size()) throw ArrayError(origin + ": .npy header length out of range");
  HeaderParser hp{bytes.substr(start, header_len), 0, origin};
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<std::vector<std::uint64_t>> shape;
  if (!hp.eat('{')) hp.fail("expected '{'");
  while (!hp.eat('}')) {
    const std::string key = hp.str();
    if (!hp.eat(':')) hp.fail("expected ':'");
    if (key == "descr") {
      hp.ws();
      if (hp.i < hp.s.size() && hp.s[hp.i] == '[') hp.fail("structured dtypes are not supported");
      descr = hp.str();
    } else if (key == "fortran_order") {
      fortran = hp.boolean();
    } else if (key == "shape") {
      shape = hp.tuple();
    } else {
      hp.fail("unknown key '" + key + "'");
    }
    if (!hp.eat(',')) {
      if (!hp.eat('}')) hp.fail("expected ',' or '}'");
      break;
    }
  }
  if (!descr || !fortran || !shape) throw ArrayError(origin + ": .npy header lacks descr, fortran_order or shape");
  const std::string& d = *descr;
  if (d.size() < 3) throw ArrayError(origin + ": unsupported dtype '" + d + "'");
  const char order = d[0], kind = d[1];
  std::size_t item = 0;
  {
    auto [p, ec] = std::from_chars(d.data() + 2, d.data() + d.size(), item);
    if (ec != std::errc() || p != d.data() + d.size()) throw ArrayError(origin + ": unsupported dtype '" + d + "'");
  }
  if (order != '<' && order != '>' && order != '|' && order != '=') throw ArrayError(origin + ": unsupported byte order in '" + d + "'");
  const bool swap = order == '>';
  std::string name;
  if (kind == 'f' && (item == 2 || item == 4 || item == 8)) name = "float" + std::to_string(item * 8);
  else if (kind == 'i' && (item == 1 || item == 2 || item == 4 || item == 8)) name = "int" + std::to_string(item * 8);
  else if (kind == 'u' && (item == 1 || item == 2 || item == 4 || item == 8)) name = "uint" + std::to_string(item * 8);
  else if (kind == 'b' && item == 1) name = "bool";
  else throw ArrayError(origin + ": unsupported dtype '" + d + "' (numeric and bool only)");
  const auto& sh = *shape;
  if (sh.empty()) throw ArrayError(origin + ": a 0-d array has no rows");
  std::uint64_t total = 1;
  for (auto v : sh) {
    if (v != 0 && total > kMaxArrayValues / v) throw ArrayError(origin + ": array too large");
    total *= v;
  }
  if (total > kMaxArrayValues) throw ArrayError(origin + ": array too large");
  const std::size_t data_start = start + header_len;
  const std::uint64_t need = total * item;
  if (bytes.size() - data_start < need) {
    throw ArrayError(origin + ": data truncated: header promises " + std::to_string(need) + " bytes, file has " +
                     std::to_string(bytes.size() - data_start));
  }
  if (bytes.size() - data_start > need) throw ArrayError(origin + ": trailing bytes after the array data");
  Matrix m;
  m.dtype = name;
  m.rows = sh[0];
  m.cols = 1;
  for (std::size_t k = 1; k < sh.size(); ++k) {
    m.cols *= sh[k];
    if (sh[k] > UINT32_MAX) throw ArrayError(origin + ": dimension too large");
    m.row_shape.push_back(static_cast<std::uint32_t>(sh[k]));
  }
  if (m.row_shape.empty()) m.row_shape.push_back(1);
  if (in_place && kind == 'f' && item == 8 && !swap && (!*fortran || sh.size() == 1) &&
      reinterpret_cast<const char*>(in_place->data()) == bytes.data()) {
    std::memmove(in_place->data(), bytes.data() + data_start, need);  // the header is parsed
    in_place->resize(total);
    m.values = std::move(*in_place);
    return m;
  }
  m.values.resize(total);
  const auto* base = reinterpret_cast<const unsigned char*>(bytes.data() + data_start);
  auto value_at = [&](std::uint64_t idx) -> double {
    const unsigned char* p = base + idx * item;
    switch (kind) {
      case 'f':
        if (item == 8) return load<double>(p, swap);
        if (item == 4) return load<float>(p, swap);
        return half_to_double(load<std::uint16_t>(p, swap));
      case 'i':
        if (item == 8) return static_cast<double>(load<std::int64_t>(p, swap));
        if (item == 4) return load<std::int32_t>(p, swap);
        if (item == 2) return load<std::int16_t>(p, swap);
        return static_cast<std::int8_t>(*p);
      case 'u':
        if (item == 8) return static_cast<double>(load<std::uint64_t>(p, swap));
        if (item == 4) return load<std::uint32_t>(p, swap);
        if (item == 2) return load<std::uint16_t>(p, swap);
        return *p;
      default:
        return *p ? 1.0 : 0.0;
    }
  };
  if (!*fortran || sh.size() == 1) {
    for (std::uint64_t k = 0; k < total; ++k) m.values[k] = value_at(k);
  } else {
    // Fortran order: the first index varies fastest. Walk the file in order, keeping the
    // multi-index, and place each value at its C-order position.
    std::vector<std::uint64_t> idx(sh.size(), 0), cstride(sh.size(), 1);
    for (std::size_t k = sh.size() - 1; k > 0; --k) cstride[k - 1] = cstride[k] * sh[k];
    for (std::uint64_t k = 0; k < total; ++k) {
      std::uint64_t pos = 0;
      for (std::size_t a = 0; a < sh.size(); ++a) pos += idx[a] * cstride[a];
      m.values[pos] = value_at(k);
      for (std::size_t a = 0; a < sh.size(); ++a) {
        if (++idx[a] < sh[a]) break;
        idx[a] = 0;
      }
    }
  }
  return m;
}

}  // namespace

Matrix parse_npy(std::string_view bytes, const std::string& origin) { return parse_npy_impl(bytes, origin, nullptr); }

Matrix read_npy(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ArrayError(path + ": cannot read (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) throw ArrayError(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ArrayError(path + ": cannot read (" + std::strerror(errno) + ")");
  const auto size = static_cast<std::size_t>(st.st_size);
  std::vector<double> buf((size + sizeof(double) - 1) / sizeof(double));
  in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) throw ArrayError(path + ": short read");
  return parse_npy_impl(std::string_view(reinterpret_cast<const char*>(buf.data()), size), path, &buf);
}

// ---- CSV -------------------------------------------------------------------------------------

namespace {

std::optional<double> parse_number(std::string_view f) {
  while (!f.empty() && (f.front() == ' ' || f.front() == '\t')) f.remove_prefix(1);
  while (!f.empty() && (f.back() == ' ' || f.back() == '\t')) f.remove_suffix(1);
  if (f.empty() || f == "NA" || f == "NaN" || f == "nan" || f == "NAN" || f == "null" || f == "None" || f == "N/A") return NAN;
  std::string_view g = f;
  bool neg = false;
  if (g.front() == '+' || g.front() == '-') {
    neg = g.front() == '-';
    g.remove_prefix(1);
  }
  if (g == "inf" || g == "Inf" || g == "INF" || g == "infinity" || g == "Infinity") return neg ? -INFINITY : INFINITY;
  if (f.front() == '+') f.remove_prefix(1);
  double v = 0;
  auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  if (ec == std::errc::result_out_of_range) return std::nullopt;
  if (ec != std::errc() || p != f.data() + f.size()) return std::nullopt;
  return v;
}

// Splits one record starting at `pos`; returns false at end of input.
bool next_record(std::string_view t, std::size_t& pos, char delim, std::vector<std::string>& fields,
                 std::size_t& line, const std::string& origin) {
  fields.clear();
  if (pos >= t.size()) return false;
  std::string cur;
  bool quoted = false, was_quoted = false;
  const std::size_t start_line = line;
  while (pos < t.size()) {
    const char c = t[pos++];
    if (quoted) {
      if (c == '"') {
        if (pos < t.size() && t[pos] == '"') {
          cur += '"';
          ++pos;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        cur += c;
      }
      if (cur.size() > (1u << 24)) throw ArrayError(origin + ":" + std::to_string(start_line) + ": field too long");
      continue;
    }
    if (c == '"' && cur.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == delim) {
      fields.push_back(std::move(cur));
      cur.clear();
      was_quoted = false;
      if (fields.size() > 65536) throw ArrayError(origin + ":" + std::to_string(start_line) + ": more than 65536 fields");
    } else if (c == '\n') {
      ++line;
      break;
    } else if (c == '\r') {
      continue;
    } else {
      cur += c;
      if (cur.size() > (1u << 24)) throw ArrayError(origin + ":" + std::to_string(start_line) + ": field too long");
    }
  }
  if (quoted) throw ArrayError(origin + ":" + std::to_string(start_line) + ": unterminated quoted field");
  fields.push_back(std::move(cur));
  return true;
}

}  // namespace

Matrix parse_csv(std::string_view text, const std::string& origin, const CsvOptions& opt) {
  Matrix m;
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
  std::size_t pos = 0, line = 1;
  std::vector<std::string> fields;
  for (std::size_t k = 0; k < opt.skip_rows; ++k) {
    if (!next_record(text, pos, opt.delimiter, fields, line, origin)) break;
  }
  bool first = true;
  while (true) {
    const std::size_t rec_line = line;
    if (!next_record(text, pos, opt.delimiter, fields, line, origin)) break;
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    if (first) {
      first = false;
      bool header = opt.header == CsvOptions::Header::present;
      if (opt.header == CsvOptions::Header::automatic) {
        for (const auto& f : fields) {
          if (!parse_number(f)) header = true;
        }
      }
      m.cols = fields.size();
      if (header) {
        m.names = fields;
        for (auto& n : m.names) {
          while (!n.empty() && n.front() == ' ') n.erase(n.begin());
          while (!n.empty() && n.back() == ' ') n.pop_back();
        }
        continue;
      }
    }
    if (fields.size() != m.cols) {
      throw ArrayError(origin + ":" + std::to_string(rec_line) + ": " + std::to_string(fields.size()) +
                       " fields, expected " + std::to_string(m.cols));
    }
    for (std::size_t c = 0; c < fields.size(); ++c) {
      const auto v = parse_number(fields[c]);
      if (!v) {
        std::string shown = fields[c].substr(0, 40);
        throw ArrayError(origin + ":" + std::to_string(rec_line) + ": field " + std::to_string(c + 1) + " is not a number: '" + shown + "'");
      }
      m.values.push_back(*v);
    }
    ++m.rows;
    if (m.values.size() > kMaxArrayValues) throw ArrayError(origin + ": too many values");
  }
  if (m.cols == 0) throw ArrayError(origin + ": empty CSV");
  m.row_shape = {static_cast<std::uint32_t>(m.cols)};
  return m;
}

Matrix read_csv(const std::string& path, const CsvOptions& options) {
  return parse_csv(read_file(path), path, options);
}

Matrix read_array(const std::string& path) {
  auto ends = [&](std::string_view suf) {
    return path.size() >= suf.size() && std::equal(suf.rbegin(), suf.rend(), path.rbegin(),
                                                   [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
  };
  if (ends(".npy")) return read_npy(path);
  if (ends(".csv") || ends(".tsv") || ends(".txt")) {
    CsvOptions o;
    if (ends(".tsv")) o.delimiter = '\t';
    return read_csv(path, o);
  }
  throw ArrayError(path + ": unknown file type (expected .npy or .csv)");
}

void write_npy(const std::string& path, const Matrix& m) {
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + std::to_string(m.rows) + ", " +
                       std::to_string(m.cols) + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw ArrayError(path + ": cannot write");
  out.write("\x93NUMPY\x01\x00", 8);
  const std::uint16_t hl = static_cast<std::uint16_t>(header.size());
  const char len[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  out.write(len, 2);
  out << header;
  out.write(reinterpret_cast<const char*>(m.values.data()), static_cast<std::streamsize>(m.values.size() * sizeof(double)));
  if (!out) throw ArrayError(path + ": write failed");
}

}  // namespace mltap::detectors
