namespace OdaKvmBackup.Core.WayBack;

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
    public bool Passed => _errors.Count == 0;
    public IReadOnlyList<DiskTestResult> Disks { get; internal set; } = [];
    /// <summary>Where the copies were read: "on this host", or "on the server" for an SSH store.</summary>
    public string ReadWhere { get; internal set; } = "";
    /// <summary>What failed, in words: the messages of <see cref="Errors"/>.</summary>
    public IReadOnlyList<string> Problems => _errors.Select(e => e.Message).ToList();
    public TimeSpan Duration { get; internal set; }
    public bool BootTested { get; internal set; }
    /// <summary>Seconds from the start of the throw-away VM until it answered (agent or console).</summary>
    public double? BootSeconds { get; internal set; }
    /// <summary>How the boot was proven ("guest agent answered guest-ping"), or why it was not.</summary>
    public string? BootResult { get; internal set; }
    /// <summary>The throw-away domain's name (gone by the time this is read).</summary>
    public string? BootTestDomain { get; internal set; }

    // The one value channel of Test-KvmBackup: a set's failures are kept on its result rather than thrown, because
    // the result is still output (the user sees which disk failed and how) and the other sets are still tested.
    // Failures that stop the test of a set before any result exists are thrown as usual.
    private readonly List<BackupException> _errors = new();

    /// <summary>Every failure found in this set, in the order found; the cmdlet writes each as an error record.</summary>
    internal IReadOnlyList<BackupException> Errors => _errors;

    internal void Fail(BackupException error) => _errors.Add(error);

    public override string ToString() => $"{DomainName} {RunId}: {(Passed ? "passed" : "FAILED")}";
}
