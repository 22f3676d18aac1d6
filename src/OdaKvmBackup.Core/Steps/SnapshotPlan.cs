namespace OdaKvmBackup.Core.Steps;

/// <summary>The outcome of the preflight: the run it would start, or every problem that stops it.</summary>
internal sealed class SnapshotPlan
{
    public required SnapshotRequest Request { get; init; }
    /// <summary>The run as its journal will first record it.</summary>
    public required RunRecord Run { get; init; }
    public required bool Cold { get; init; }
    /// <summary>The domain's disks that get snapshot=no: not piped, so not backed up.</summary>
    public required IReadOnlyList<string> ExcludedTargets { get; init; }
    /// <summary>A journal of an earlier run that is over (its overlays are gone): closed when the snapshot starts.</summary>
    public bool ClosesStaleJournal { get; init; }
    public required IReadOnlyList<BackupException> Problems { get; init; }
    public required IReadOnlyList<string> Warnings { get; init; }
    public string DomainName => Request.DomainName;
    public string RunId => Run.RunId;
    public IReadOnlyList<DiskRecord> Disks => Run.Disks;

    /// <summary>New-KvmDiskSnapshot's ShouldProcess text.</summary>
    public string Action => Cold
        ? $"Back up the disks ({string.Join(", ", Disks.Select(d => d.Target))}) of shut-off domain as they are: a cold copy, no snapshot"
        : $"Create external snapshot '{Request.SnapshotName}' of {string.Join(", ", Disks.Select(d => d.Target))} ({(Request.CrashConsistent ? "crash-consistent, no freeze" : "quiesced by the guest agent")}); overlays: {string.Join(", ", Disks.Select(d => d.Overlay))}";

    /// <summary>What the user is told once the snapshot is confirmed, when it is not the usual quiesced one.</summary>
    public string? Notice => Cold
        ? $"'{DomainName}' is shut off: its disks are copied as they are, without a snapshot (a cold backup)."
        : Request.CrashConsistent
            ? $"'{DomainName}' is snapshotted without freezing its file systems: the backup is crash-consistent, as after a power cut, and is recorded as such."
            : null;
}
