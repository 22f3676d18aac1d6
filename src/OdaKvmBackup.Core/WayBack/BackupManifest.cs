using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>backup.json: what a backup set holds and whether it can be trusted (Status Complete).</summary>
internal sealed class BackupManifest
{
    /// <summary><see cref="CheckedManifest.KnownFormat"/> for a new set (its copies described by digest lists);
    /// <see cref="CheckedManifest.EarlierFormat"/> for sets of earlier versions (ContentDigest), and for a set written
    /// from a run whose copies were still verified by content digest (see <see cref="FromRun"/>).</summary>
    public string Format { get; init; } = CheckedManifest.KnownFormat;
    public required string DomainName { get; init; }
    public required string RunId { get; init; }
    /// <summary>The status as backup.json spells it. Whatever a store holds is untrusted: a name no version writes
    /// ("Done", "complete", a number) is kept as it is, so that <see cref="CheckedManifest"/> refuses it with its
    /// reason; code reads <see cref="Status"/>, from a checked manifest or one a run wrote.</summary>
    [JsonPropertyName("Status")]
    public string StatusName { get; set; } = nameof(BackupSetStatus.InProgress);

    /// <summary>The status; throws for a name that is not one (which <see cref="CheckedManifest"/> never lets through).</summary>
    [JsonIgnore]
    public BackupSetStatus Status
    {
        get => TryParseStatus(StatusName, out var status) ? status
            : throw new InvalidOperationException($"The manifest's Status {FileSystemPaths.Quote(StatusName)} was not checked.");
        set => StatusName = value.ToString();
    }

    /// <summary>A status by its exact name (ordinal: no other case, no number, no list).</summary>
    public static bool TryParseStatus(string? name, out BackupSetStatus status)
    {
        status = default;
        return name is not null && Enum.GetNames<BackupSetStatus>().Contains(name, StringComparer.Ordinal)
            && Enum.TryParse(name, out status);
    }
    public string? Reason { get; set; }
    public required BackupConsistency Consistency { get; init; }
    public required string SnapshotName { get; init; }
    public string HostName { get; init; } = Environment.MachineName;
    public DateTime StartedUtc { get; init; } = DateTime.UtcNow;
    public DateTime? CompletedUtc { get; set; }
    public required List<ManifestDisk> Disks { get; init; }
    /// <summary>The domain's disks that this set does not hold, and why.</summary>
    public List<ExcludedDisk> ExcludedDisks { get; init; } = new();

    /// <summary>What a run's journal says, as a manifest.</summary>
    /// <remarks>The Format says how the copies are verified: OdaKvmBackup/3 (digest lists) unless the run's copies carry
    /// only the earlier content digests (a run journaled by an earlier version, finished by Repair-KvmBackup).</remarks>
    public static BackupManifest FromRun(RunRecord run, BackupSetStatus status, string? reason) => new()
    {
        Format = run.Disks.Any(d => d.Digests is not null) || !run.Disks.Any(d => d.ContentDigest is not null || d.SegmentDigests is not null)
            ? CheckedManifest.KnownFormat : CheckedManifest.EarlierFormat,
        DomainName = run.DomainName,
        RunId = run.RunId,
        Status = status,
        Reason = reason,
        Consistency = run.Consistency,
        SnapshotName = run.SnapshotName,
        HostName = run.HostName,
        StartedUtc = run.SnapshotUtc ?? run.StartedUtc,
        CompletedUtc = status == BackupSetStatus.Complete ? DateTime.UtcNow : null,
        Disks = run.Disks.Select(d => new ManifestDisk
        {
            Target = d.Target,
            Source = d.Source,
            Format = d.Format,
            File = d.SetFile,
            SizeBytes = d.SizeBytes,
            VirtualSizeBytes = d.VirtualSizeBytes,
            DataBytes = d.DataBytes,
            ContentDigest = d.ContentDigest,
            SegmentSize = d.SegmentDigests is null ? null : SparseCopy.SegmentSize,
            SegmentDigests = d.SegmentDigests,
            Digests = d.Digests,
            BasedOn = d.BasedOn,
            FullBecause = d.FullBecause,
            StoredAs = d.StoredAs,
            BytesRead = d.BytesRead,
            BytesSent = d.BytesSent,
            BytesCloned = d.BytesCloned,
            BytesResent = d.BytesResent,
            Verified = d.Verified,
            VerifiedBy = d.VerifiedBy,
        }).ToList(),
        ExcludedDisks = run.ExcludedDisks.ToList(),
    };
}
