namespace OdaKvmBackup.Core.Tests.Remote;

public class SftpProtocolTests
{
    [Fact]
    public void An_open_request_is_encoded_as_the_draft_says()
    {
        var packet = new SftpPacketWriter(SftpPacketType.Open, requestId: 7);
        packet.WriteString("/b/ä");
        packet.WriteUInt32((uint)(SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive));
        packet.WriteAttributes(SftpAttributes.WithMode(UnixFileMode.UserRead | UnixFileMode.UserWrite));

        byte[] expected =
        [
            0, 0, 0, 26,        // length of what follows
            3,                  // SSH_FXP_OPEN
            0, 0, 0, 7,         // request id
            0, 0, 0, 5, (byte)'/', (byte)'b', (byte)'/', 0xC3, 0xA4, // UTF-8 file name
            0, 0, 0, 0x2A,      // WRITE | CREAT | EXCL
            0, 0, 0, 4,         // attribute flags: permissions
            0, 0, 0x01, 0x80,   // 0600
        ];
        Assert.Equal(expected, packet.Finish().ToArray());
    }

    [Fact]
    public void A_write_header_counts_the_data_sent_after_it()
    {
        var packet = new SftpPacketWriter(SftpPacketType.Write, requestId: 1);
        packet.WriteBytes([0xAA, 0xBB]);
        packet.WriteUInt64(0x1_0000_0000);
        packet.WriteUInt32(1000);

        var header = packet.FinishHeader(1000).ToArray();

        Assert.Equal(4 + 1 + 4 + 6 + 8 + 4, header.Length);
        Assert.Equal(header.Length - 4 + 1000, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(header));
        Assert.Equal(new byte[] { 0, 0, 0, 1, 0, 0, 0, 0 }, header[15..23]);
    }

    [Fact]
    public void Attributes_with_every_field_are_read_back()
    {
        var written = new SftpAttributes
        {
            Size = 5_000_000_000,
            Uid = 0,
            Gid = 990,
            Permissions = 0x4000 | 0x1C0, // a folder, 0700
            AccessTimeUtc = new DateTime(2026, 11, 28, 10, 15, 0, DateTimeKind.Utc),
            ModifiedTimeUtc = new DateTime(2026, 11, 28, 10, 16, 0, DateTimeKind.Utc),
        };
        var packet = new SftpPacketWriter(SftpPacketType.Attrs, requestId: 9);
        packet.WriteAttributes(written);
        var bytes = packet.Finish().ToArray();

        var reader = new SftpPacketReader(bytes.AsSpan(9));
        var read = reader.ReadAttributes();

        Assert.Equal(written, read);
        Assert.True(read.IsDirectory);
        Assert.False(read.IsRegularFile);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, read.Mode);
        Assert.Equal(0, reader.Remaining);
    }

    [Fact]
    public void Extended_attributes_from_a_server_are_skipped()
    {
        byte[] body =
        [
            0x80, 0, 0, 1,             // flags: SIZE | EXTENDED
            0, 0, 0, 0, 0, 0, 0, 42,   // size
            0, 0, 0, 1,                // one extended pair
            0, 0, 0, 1, (byte)'k', 0, 0, 0, 1, (byte)'v',
        ];
        var reader = new SftpPacketReader(body);

        Assert.Equal(42, reader.ReadAttributes().Size);
        Assert.Equal(0, reader.Remaining);
    }

    [Fact]
    public void A_packet_too_short_for_its_fields_is_invalid_data()
    {
        Assert.Throws<InvalidDataException>(() => new SftpPacketReader([0, 0, 0, 9, 1, 2]).ReadString());
        Assert.Throws<InvalidDataException>(() => new SftpPacketReader([0, 0, 0]).ReadUInt32());
    }

    [Fact]
    public void Free_space_is_available_blocks_times_fragment_size()
    {
        var info = new SftpFileSystemInfo(BlockSize: 4096, FragmentSize: 1024, Blocks: 1000, FreeBlocks: 500, AvailableBlocks: 300);

        Assert.Equal(300 * 1024, info.AvailableBytes);
    }
}
