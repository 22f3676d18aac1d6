using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>Reads and writes backup.json in a store. Reading checks it (<see cref="CheckedManifest"/>): that is
/// the only way a manifest comes out of a store.</summary>
internal static class BackupSet
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
            // A manifest without a Format is read as the earlier format (the default is that of new sets).
            var node = JsonNode.Parse(json);
            if (node is JsonObject fields && !fields.ContainsKey(nameof(BackupManifest.Format)))
                fields[nameof(BackupManifest.Format)] = CheckedManifest.EarlierFormat;
            return node?.Deserialize<BackupManifest>(Options) ?? throw new JsonException("the file is empty");
        }
        catch (Exception ex) when (ex is JsonException or NotSupportedException or ArgumentException)
        {
            throw new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData,
                $"The manifest '{where}' cannot be read: {ex.Message}",
                "The set cannot be trusted: back up again; keep the folder only to inspect it by hand.", where, ex);
        }
    }
}
