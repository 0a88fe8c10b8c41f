// The process's own resident memory and CPU time, read from /proc/self/stat at each scrape.
// procfs is served from kernel memory, so the read does not wait on a disk.

import Foundation

public enum ProcessMetrics {
    /// Registers `process_resident_memory_bytes`, `process_cpu_seconds_total` and
    /// `process_start_time_seconds` with a collector that reads them.
    public static func register(in registry: MetricsRegistry) {
        let rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
        let cpu = registry.counter("process_cpu_seconds_total",
                                   "User and system CPU time spent in seconds.")
        let start = registry.gauge("process_start_time_seconds",
                                   "Start time of the process since the Unix epoch in seconds.")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/stat (the boot time) is hidden by the units' ProcSubset=pid; the registry is
        // made as the daemon starts, which is close enough for a start time.
        start.set(Date().timeIntervalSince1970)
        registry.addCollector {
            guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
                  let fields = Self.statFields(stat) else { return }
            // Fields after the command name, numbered as in proc(5) from field 3 on.
            func field(_ n: Int) -> Double { Double(fields[n - 3]) ?? 0 }
            rss.set(field(24) * page)
            cpu.set(labels: [], to: (field(14) + field(15)) / ticks)
        }
    }

    /// The fields after "pid (comm)"; comm may hold spaces and parentheses, so the split
    /// starts after the last ')'.
    static func statFields(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(after: close)...].split(separator: " ")
        return rest.count >= 22 ? rest : nil
    }
}
