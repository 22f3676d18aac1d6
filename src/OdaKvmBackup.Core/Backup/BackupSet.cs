using System.Text.Json;
using System.Text.Json.Serialization;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

public static class BackupSetStatus
{
    /// <summary>Being written, or its run was killed before it could say otherwise (Repair-KvmBackup then marks it Incomplete).</summary>
    public const string InProgress = "InProgress";
    /// <summary>Every disk the run backs up was copied and verified. Disks left out are listed in ExcludedDisks.</summary>
    public const string Complete = "Complete";
    /// <summary>The run failed or was stopped: never restore from it.</summary>
    public const string Incomplete = "Incomplete";
}

public sealed class ManifestDisk
{
    public required string Target { get; init; }
    public required string Source { get; init; }
    public required string Format { get; init; }
    public required string File { get; init; }
    public long? SizeBytes { get; set; }
    /// <summary>The disk's virtual size (what the guest sees), as qemu-img info read it from the disk when the run
    /// was planned: for a qcow2 copy it is not the file's size. Sets of earlier builds have none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? VirtualSizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>The disk's content digest, as <see cref="VmDiskBackup.ContentDigest"/> (not a sha256sum).</summary>
    public string? ContentDigest { get; set; }
    /// <summary>For a copy on another host: the SHA-256 of each segment of <see cref="SegmentSize"/> bytes that holds
    /// data, by segment number (see <see cref="CopyResult.SegmentDigests"/>), so that the copy is checked where it lies
    /// (on the server, <see cref="Storage.IBackupStore.SegmentDigestsAsync"/>), never read back over the network.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? SegmentSize { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SortedDictionary<long, string>? SegmentDigests { get; set; }
    public bool Verified { get; set; }
    /// <summary>How the copy was checked, in words.</summary>
    public string? VerifiedBy { get; set; }
}

/// <summary>backup.json: what a backup set holds and whether it can be trusted (Status Complete).</summary>
public sealed class BackupManifest
{
    public string Format { get; init; } = "OdaKvmBackup/2";
    public required string DomainName { get; init; }
    public required string RunId { get; init; }
    public string Status { get; set; } = BackupSetStatus.InProgress;
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
    public static BackupManifest FromRun(RunRecord run, string status, string? reason) => new()
    {
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
            Verified = d.Verified,
            VerifiedBy = d.VerifiedBy,
        }).ToList(),
        ExcludedDisks = run.ExcludedDisks.ToList(),
    };
}

/// <summary>Reads and writes backup.json in a store. Reading checks it (<see cref="CheckedManifest"/>): that is
/// the only way a manifest comes out of a store.</summary>
public static class BackupSet
{
    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public static byte[] Serialize(BackupManifest manifest) => JsonSerializer.SerializeToUtf8Bytes(manifest, Options);

    /// <summary>The manifest of the set in <paramref name="setFolder"/> (&lt;domain&gt;/&lt;run id&gt;), checked. Throws
    /// PathNotFound when there is none, BackupSetUnreadable (naming the file and why) when it cannot be read or
    /// breaks a rule.</summary>
    public static async Task<CheckedManifest> LoadAsync(IBackupStore store, string setFolder, CancellationToken ct)
    {
        var where = store.Describe(BackupNames.ManifestPath(setFolder));
        var json = await store.ReadSmallFileAsync(BackupNames.ManifestPath(setFolder), ct).ConfigureAwait(false);
        return CheckedManifest.Check(Parse(json, where), setFolder, where);
    }

    public static Task SaveAsync(IBackupStore store, string setFolder, BackupManifest manifest, CancellationToken ct) =>
        store.WriteSmallFileAsync(BackupNames.ManifestPath(setFolder), Serialize(manifest), ct);

    private static BackupManifest Parse(byte[] json, string where)
    {
        try
        {
            return JsonSerializer.Deserialize<BackupManifest>(json, Options) ?? throw new JsonException("the file is empty");
        }
        catch (Exception ex) when (ex is JsonException or NotSupportedException or ArgumentException)
        {
            throw new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData,
                $"The manifest '{where}' cannot be read: {ex.Message}",
                "The set cannot be trusted: back up again; keep the folder only to inspect it by hand.", where, ex);
        }
    }
}
