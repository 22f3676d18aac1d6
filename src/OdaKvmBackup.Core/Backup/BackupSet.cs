using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.Backup;

public static class BackupSetStatus
{
    public const string InProgress = "InProgress";
    public const string Complete = "Complete";
    public const string Incomplete = "Incomplete";
}

public sealed class ManifestDisk
{
    public required string Target { get; init; }
    public required string Source { get; init; }
    public required string Format { get; init; }
    public required string File { get; init; }
    public long? SizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>The disk's content digest, as <see cref="VmDiskBackup.ContentDigest"/> (not a sha256sum).</summary>
    public string? ContentDigest { get; set; }
    public bool Verified { get; set; }
}

/// <summary>backup.json: what a backup set holds and whether it can be trusted (Status Complete).</summary>
public sealed class BackupManifest
{
    public string Format { get; init; } = "OdaKvmBackup/1";
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
}

public static class BackupSet
{
    public const string ManifestFileName = "backup.json";
    public const string DomainXmlFileName = "domain.xml";

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public static string ManifestPath(string setFolder) => Path.Combine(setFolder, ManifestFileName);

    public static BackupManifest Load(string setFolder) =>
        JsonSerializer.Deserialize<BackupManifest>(File.ReadAllText(ManifestPath(setFolder)), Options)
        ?? throw new InvalidDataException($"{ManifestPath(setFolder)} is empty.");

    public static void Save(string setFolder, BackupManifest manifest) =>
        Safety.AtomicFile.WriteAllText(ManifestPath(setFolder), JsonSerializer.Serialize(manifest, Options));

    /// <summary>Marks a set that was interrupted, so it can never pass for a good backup.</summary>
    public static void MarkIncomplete(string setFolder, string reason)
    {
        if (!File.Exists(ManifestPath(setFolder)))
            return;
        var manifest = Load(setFolder);
        // A Complete set had every disk copied and verified: what fails later (a commit) does not spoil it.
        if (manifest.Status != BackupSetStatus.InProgress)
            return;
        manifest.Status = BackupSetStatus.Incomplete;
        manifest.Reason = reason;
        Save(setFolder, manifest);
    }
}
