using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>Reads the fields of one received packet (without its length). A packet too short for what it should
/// hold is a protocol error.</summary>
internal ref struct SftpPacketReader
{
    private readonly ReadOnlySpan<byte> _packet;
    private int _position;

    public SftpPacketReader(ReadOnlySpan<byte> packet)
    {
        _packet = packet;
        _position = 0;
    }

    public readonly int Remaining => _packet.Length - _position;

    public byte ReadByte() => Take(1)[0];

    public uint ReadUInt32() => BinaryPrimitives.ReadUInt32BigEndian(Take(4));

    public ulong ReadUInt64() => BinaryPrimitives.ReadUInt64BigEndian(Take(8));

    public ReadOnlySpan<byte> ReadBytes() => Take(checked((int)ReadUInt32()));

    public string ReadString() => Encoding.UTF8.GetString(ReadBytes());

    public SftpAttributes ReadAttributes() => SftpAttributes.ReadFrom(ref this);

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || count > Remaining)
            throw new InvalidDataException($"SFTP packet too short: {count} bytes wanted at {_position} of {_packet.Length}.");
        var span = _packet.Slice(_position, count);
        _position += count;
        return span;
    }
}
