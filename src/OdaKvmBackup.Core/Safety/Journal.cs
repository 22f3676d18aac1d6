using System.Text.Json;
using System.Text.Json.Serialization;
using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Core.Safety;

public sealed class JournalDisk
{
    public required string Target { get; init; }
    public required string Source { get; init; }
    public required string Format { get; init; }
    public string? Overlay { get; init; }
    public bool Committed { get; set; }
}

/// <summary>What a backup has in flight for one domain: written before the snapshot, removed once every disk is
/// committed back. If the process dies in between, Repair-KvmBackup reads it.</summary>
public sealed class JournalEntry
{
    public required string DomainName { get; init; }
    public required string RunId { get; init; }
    public required string SnapshotName { get; init; }
    public required BackupConsistency Consistency { get; init; }
    public int ProcessId { get; init; } = Environment.ProcessId;
    public string HostName { get; init; } = Environment.MachineName;
    public DateTime StartedUtc { get; init; } = DateTime.UtcNow;
    /// <summary>Snapshotting, OnOverlays or Committing.</summary>
    public string Phase { get; set; } = JournalPhase.Snapshotting;
    public string? BackupSet { get; set; }
    public required List<JournalDisk> Disks { get; init; }
}

public static class JournalPhase
{
    public const string Snapshotting = "Snapshotting";
    public const string OnOverlays = "OnOverlays";
    public const string Committing = "Committing";
}

public static class Journal
{
    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public static string PathFor(string domain) => Path.Combine(StateDirectory.JournalDirectory, StateDirectory.FileNameFor(domain) + ".json");

    /// <summary>Written to a temporary file, flushed and renamed, so a crash never leaves half a journal.</summary>
    public static void Save(JournalEntry entry)
    {
        Directory.CreateDirectory(StateDirectory.JournalDirectory);
        AtomicFile.WriteAllText(PathFor(entry.DomainName), JsonSerializer.Serialize(entry, Options));
    }

    public static JournalEntry? TryLoad(string domain)
    {
        var path = PathFor(domain);
        if (!File.Exists(path))
            return null;
        try
        {
            return JsonSerializer.Deserialize<JournalEntry>(File.ReadAllText(path), Options);
        }
        catch (JsonException)
        {
            return null; // unreadable: the backing chain still tells Repair-KvmBackup what to do
        }
    }

    public static IEnumerable<JournalEntry> LoadAll()
    {
        if (!Directory.Exists(StateDirectory.JournalDirectory))
            yield break;
        foreach (var file in Directory.EnumerateFiles(StateDirectory.JournalDirectory, "d-*.json"))
        {
            var domain = Uri.UnescapeDataString(Path.GetFileNameWithoutExtension(file)[2..]);
            if (TryLoad(domain) is { } entry)
                yield return entry;
        }
    }

    public static void Delete(string domain)
    {
        if (File.Exists(PathFor(domain)))
            File.Delete(PathFor(domain));
    }
}

public static class AtomicFile
{
    public static void WriteAllText(string path, string text)
    {
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        using (var writer = new StreamWriter(stream))
        {
            writer.Write(text);
            writer.Flush();
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }
}
