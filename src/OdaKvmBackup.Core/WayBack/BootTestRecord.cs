using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>A boot test in flight, written before anything is created, removed once all is cleaned up: what a
/// later Test-KvmBackup cleans up when the process that ran it was killed.</summary>
internal sealed class BootTestRecord
{
    public required string DomainName { get; init; }
    public required string Folder { get; init; }
    public required string SetLocation { get; init; }
    public int ProcessId { get; init; } = Environment.ProcessId;
    public DateTime ProcessStartUtc { get; init; } = Process.GetCurrentProcess().StartTime.ToUniversalTime();
    public DateTime StartedUtc { get; init; } = DateTime.UtcNow;
}
