namespace OdaKvmBackup.Core.RunState;

/// <summary>Where a run is. It is written to the journal before each step that changes the host.</summary>
internal enum RunPhase
{
    /// <summary>Checked and about to snapshot: no overlay exists yet.</summary>
    Planned,
    /// <summary>snapshot-create-as was started: overlays may exist even if the call did not return.</summary>
    Snapshotting,
    /// <summary>Some disk may write to an overlay.</summary>
    OnOverlays,
    /// <summary>Every disk writes to its own file again; the run's overlays are still beside the disks until
    /// they are retained (the journal is their only record).</summary>
    Committed,
    /// <summary>The run failed or was stopped and the domain is being put back on its own disks.</summary>
    RollingBack,
    /// <summary>Putting the domain back did not finish: Repair-KvmBackup must look.</summary>
    NeedsRepair,
    /// <summary>Every disk writes to its own file again and the run's leftovers are gone.</summary>
    Finished,
}

/// <summary>A run: one domain's backup, from its preflight until every disk writes to its own file again. The
/// journal file holds it; the pipeline objects point at the <see cref="BackupRun"/> that owns it.</summary>
internal sealed class RunRecord
{
    public required string DomainName { get; init; }
    public required string RunId { get; init; }
    public required string SnapshotName { get; init; }
    public required BackupConsistency Consistency { get; init; }
    public int ProcessId { get; init; } = Environment.ProcessId;
    public string HostName { get; init; } = Environment.MachineName;
    public DateTime StartedUtc { get; init; } = DateTime.UtcNow;
    public DateTime? SnapshotUtc { get; set; }
    public RunPhase Phase { get; set; } = RunPhase.Planned;
    /// <summary>snapshot-create-as was stopped by its time limit: libvirtd may still finish the snapshot later, so
    /// only Repair-KvmBackup, run once libvirtd answers again, can close the run.</summary>
    public bool SnapshotOutcomeUnknown { get; set; }
    /// <summary>Why the run was abandoned, when it was.</summary>
    public string? FailureReason { get; set; }
    /// <summary>Why the set was marked Incomplete, when it was before every disk was verified: for good, a check
    /// that passes later does not make it whole again (kept here so that Repair-KvmBackup closes it the same way).</summary>
    public string? SetIncompleteReason { get; set; }
    /// <summary>The destination as the user named it, once the set exists ("/backup" or "root@srv:/backup").</summary>
    public string? Destination { get; set; }
    /// <summary>The set folder relative to <see cref="Destination"/>.</summary>
    public string? SetFolder { get; set; }
    /// <summary>The domain definition from before the snapshot (disks on their own files): domain.xml in the set.</summary>
    public required string DomainXml { get; init; }
    public required List<DiskRecord> Disks { get; init; }
    public List<ExcludedDisk> ExcludedDisks { get; init; } = new();

    public DiskRecord Disk(string target) =>
        Disks.FirstOrDefault(d => d.Target == target)
        ?? throw new ArgumentException($"Run {RunId} of '{DomainName}' has no disk {target}.", nameof(target));
}
