using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.RunState;

/// <summary>
/// The journal: one file per domain with a run in flight, under the state folder. It is written (fsynced and
/// renamed into place, the folder fsynced) before each step that changes the host, and removed once the domain
/// writes to its own disks again; so after kill -9, an OOM kill or a power cut it says what was going on.
/// </summary>
internal static class RunJournal
{
    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Writes the journal; one that cannot be written is <see cref="ErrorIds.JournalWriteFailed"/>, naming it.</summary>
    public static void Save(RunRecord record)
    {
        var path = StateDirectory.JournalPath(record.DomainName);
        try
        {
            PrivateFiles.CreateFolder(StateDirectory.JournalDirectory);
            PrivateFiles.WriteAtomically(path, JsonSerializer.SerializeToUtf8Bytes(record, Options));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw RunErrors.JournalWriteFailed(record.DomainName, $"The journal '{path}' of '{record.DomainName}' cannot be written", ex);
        }
    }

    /// <summary>The domain's journal, or null when it has none. An unreadable journal is an error: it may be the
    /// only record that a domain writes to overlays, so it is never taken for "nothing to do".</summary>
    public static RunRecord? TryLoad(string domain)
    {
        var path = StateDirectory.JournalPath(domain);
        if (!File.Exists(path))
            return null;
        try
        {
            return JsonSerializer.Deserialize<RunRecord>(File.ReadAllBytes(path), Options)
                ?? throw new JsonException("the file is empty");
        }
        catch (Exception ex) when (ex is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new BackupException(ErrorIds.JournalUnreadable, BackupErrorCategory.InvalidData,
                $"The journal '{path}' of '{domain}' cannot be read: {ex.Message}",
                $"Check the domain by hand (virsh domblklist {domain} --details; a disk on a *.FILE_STAGE_BACKUP.TEMP file is on an overlay), then move the journal away and run Repair-KvmBackup -DomainName {domain} -IncludeUnrecorded.",
                domain, ex);
        }
    }

    /// <summary>The domains that have a journal.</summary>
    public static IReadOnlyList<string> Domains()
    {
        if (!Directory.Exists(StateDirectory.JournalDirectory))
            return [];
        return Directory.EnumerateFiles(StateDirectory.JournalDirectory, "d-*.json")
            .Select(StateDirectory.DomainOfJournal).OfType<string>().Order(StringComparer.Ordinal).ToList();
    }

    public static void Delete(string domain)
    {
        var path = StateDirectory.JournalPath(domain);
        try
        {
            PrivateFiles.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw RunErrors.JournalWriteFailed(domain, $"The journal '{path}' of '{domain}' cannot be removed", ex);
        }
    }
}
