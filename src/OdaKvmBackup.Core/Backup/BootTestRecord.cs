using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

/// <summary>A boot test in flight, written before anything is created, removed once all is cleaned up: what a
/// later Test-KvmBackup cleans up when the process that ran it was killed.</summary>
public sealed class BootTestRecord
{
    public required string DomainName { get; init; }
    public required string Folder { get; init; }
    public required string SetLocation { get; init; }
    public int ProcessId { get; init; } = Environment.ProcessId;
    public DateTime ProcessStartUtc { get; init; } = Process.GetCurrentProcess().StartTime.ToUniversalTime();
    public DateTime StartedUtc { get; init; } = DateTime.UtcNow;
}
