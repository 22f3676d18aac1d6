using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.RunState;

/// <summary>One disk of a run, as the journal records it.</summary>
internal sealed class DiskRecord
{
    public required string Target { get; init; }
    /// <summary>The disk's own file: frozen while the domain writes to <see cref="Overlay"/>.</summary>
    public required string Source { get; init; }
    public required string Format { get; init; }
    /// <summary>The overlay the domain writes to during the backup; null for a cold backup.</summary>
    public string? Overlay { get; init; }
    /// <summary>The copy's file name in the backup set (decided by <see cref="BackupNames"/>).</summary>
    public required string SetFile { get; init; }
    /// <summary>The overlay's file name in the retention folder (decided by <see cref="BackupNames"/>).</summary>
    public string? RetainedName { get; init; }

    [JsonConverter(typeof(StageJsonConverter))]
    public BackupStage State { get; set; } = BackupStage.Planned;
    /// <summary>What qemu-img info said of the disk's virtual size when the run was planned (null when it was not
    /// asked): the set's manifest keeps it, to check a copy against before QEMU reads it.</summary>
    public long? VirtualSizeBytes { get; set; }
    public long? SizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>See <see cref="VmDiskBackup.ContentDigest"/>.</summary>
    public string? ContentDigest { get; set; }
    /// <summary>For a copy on another host: see <see cref="Copies.BlockDigestList.DataSegmentDigests"/>.</summary>
    public SortedDictionary<long, string>? SegmentDigests { get; set; }
    /// <summary>Issue 15 (see the same names in <see cref="ManifestDisk"/>).</summary>
    public string? Digests { get; set; }
    public string? BasedOn { get; set; }
    public string? FullBecause { get; set; }
    public string? StoredAs { get; set; }
    public long? BytesRead { get; set; }
    public long? BytesSent { get; set; }
    public long? BytesCloned { get; set; }
    public long? BytesResent { get; set; }
    /// <summary>The copy was read back from the destination's storage and matched what was read from the source.</summary>
    public bool Verified { get; set; }
    public string? VerifiedBy { get; set; }
    public string? RetainedOverlay { get; set; }
    public DateTime? CopyStartedUtc { get; set; }
    public DateTime? CopiedUtc { get; set; }
    public DateTime? CommitStartedUtc { get; set; }
    public DateTime? CommittedUtc { get; set; }

    /// <summary>Writes a stage by its name and reads the names of this version and of the earlier one, which wrote
    /// "OnOverlay" for <see cref="BackupStage.Snapshotted"/>: a journal left by a run killed before an upgrade must
    /// still be read by Repair-KvmBackup. Anything else (a number, an unknown word) makes the journal unreadable.</summary>
    internal sealed class StageJsonConverter : JsonConverter<BackupStage>
    {
        private const string EarlierSnapshotted = "OnOverlay";

        public override BackupStage Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            var name = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
            if (name == EarlierSnapshotted)
                return BackupStage.Snapshotted;
            if (name is not null && Enum.GetNames<BackupStage>().Contains(name, StringComparer.Ordinal))
                return Enum.Parse<BackupStage>(name);
            throw new JsonException($"the disk state {(name is null ? reader.TokenType.ToString() : FileSystemPaths.Quote(name))} is not one of {string.Join(", ", Enum.GetNames<BackupStage>())}");
        }

        public override void Write(Utf8JsonWriter writer, BackupStage value, JsonSerializerOptions options) =>
            writer.WriteStringValue(value.ToString());
    }
}
