using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

/// <summary>How one copy of a set fared.</summary>
public sealed record DiskTestResult(string Target, string File, string Format, bool Passed, string DigestCheck, string ImageCheck,
    string? Problem, string Location);

/// <summary>What Test-KvmBackup says of one set.</summary>
public sealed class BackupSetTestResult
{
    internal BackupSetTestResult(BackupSetInfo set) => Set = set;

    /// <summary>The set tested (as Get-KvmBackup shows it).</summary>
    public BackupSetInfo Set { get; }
    public string DomainName => Set.DomainName;
    public string RunId => Set.RunId;
    public DateTime Time => Set.Time;
    /// <summary>The set's status in its manifest.</summary>
    public string Status => Set.Status;
    public string Location => Set.Location;
    /// <summary>True when every copy read back equal to the manifest and passed qemu-img check (and, with -Boot,
    /// the set booted).</summary>
    public bool Passed => Problems.Count == 0;
    public IReadOnlyList<DiskTestResult> Disks { get; internal set; } = [];
    /// <summary>Where the copies were read: "on this host", or "on the server" for an SSH store.</summary>
    public string ReadWhere { get; internal set; } = "";
    public List<string> Problems { get; } = new();
    public TimeSpan Duration { get; internal set; }
    public bool BootTested { get; internal set; }
    /// <summary>Seconds from the start of the throw-away VM until it answered (agent or console).</summary>
    public double? BootSeconds { get; internal set; }
    /// <summary>How the boot was proven ("guest agent answered guest-ping"), or why it was not.</summary>
    public string? BootResult { get; internal set; }
    /// <summary>The throw-away domain's name (gone by the time this is read).</summary>
    public string? BootTestDomain { get; internal set; }

    public override string ToString() => $"{DomainName} {RunId}: {(Passed ? "passed" : "FAILED")}";
}
