using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Core.Backup;

/// <summary>The outcome of the preflight: the run it would start, or every problem that stops it.</summary>
public sealed class SnapshotPlan
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
}
